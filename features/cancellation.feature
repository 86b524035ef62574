@M0-W-1330 @M0-SYS-6.3.5
@checked-d4a857ac
Feature: POST /cancel stops a job promptly (spec §7.4)
  A cancel is answered 202, is idempotent, stops decoding and ends the job's stream with an
  `error` event whose code is CANCELLED, within the 5 s deadline.

  Background:
    Given a worker serving its model

  @M0-W-1510 @M0-W-1500
  Scenario: Cancelling a running job ends its stream with a CANCELLED error
    Given a job that is generating tokens
    When the client cancels it
    Then the cancel is answered with HTTP 202
    And the stream ends within 5 seconds with an error event with code CANCELLED
    And the error event has a string "message" and a boolean "retriable"
    And fewer than max_tokens tokens were streamed

  Scenario: Cancelling the same job twice is safe
    Given a job that is generating tokens
    When the client cancels it twice
    Then both cancels are answered with HTTP 202
    And the stream ends within 5 seconds with an error event with code CANCELLED
    And the worker then completes a new job

  Scenario: Cancelling a job that has finished is accepted and changes nothing
    When the client executes:
      """
      {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
      """
    And the client cancels that job
    Then the cancel is answered with HTTP 202
    And the worker then completes a new job

  Scenario: Cancelling a job id the worker never saw does not disturb it
    When the client cancels a job id the worker never saw
    Then the cancel is answered with HTTP 202 or 404
    And the worker then completes a new job

  @M0-W-1301
  Scenario: Cancelling a job that waits in the queue ends it with CANCELLED
    Given a job that is generating tokens
    And a second job queued behind it
    When the client cancels the second job
    Then the second job's stream ends within 5 seconds with an error event with code CANCELLED
    And the first job ends with CANCELLED when it is cancelled too, or with end if it finished first
