@deferred-M1 @M0-W-1830
@checked-d4a857ac
Feature: Performance targets (spec §10; deferred to M1 by §0.0 and §15.3)
  The harness measures each target and reports the figure; a miss is informational and
  never fails the M0 verdict.

  Background:
    Given a worker serving its model

  @M0-W-1600
  Scenario: First token within 100 ms at p95
    When the client executes this request 5 times:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 4, "temperature": 0}
      """
    Then the p95 time from request to first token is under 100 ms

  @M0-W-1601
  Scenario: At least 20 tokens per second
    When the client executes:
      """
      {"prompt": "Count from one to one hundred: one, two, three,", "max_tokens": 32, "temperature": 0}
      """
    Then tokens were generated at 20 tokens per second or more

  @M0-W-1602
  Scenario: Inter-token latency within 50 ms at p95
    When the client executes:
      """
      {"prompt": "Count from one to one hundred: one, two, three,", "max_tokens": 32, "temperature": 0}
      """
    Then the p95 time between token events is under 50 ms

  @M0-W-1604
  Scenario: /health answers within 10 ms at p99
    When the client gets /health 50 times
    Then the p99 time of /health is under 10 ms

  @M0-W-1610
  Scenario: A cancelled job stops within 100 ms
    Given a job that is generating tokens
    When the client cancels it
    Then the stream ends within 0.1 seconds with an error event with code CANCELLED

  @M0-W-1611
  Scenario: A client that disconnects frees the worker within 100 ms
    Given a job that is generating tokens
    When the client disconnects from its stream
    And the client executes:
      """
      {"prompt": "Hello", "max_tokens": 1, "temperature": 0}
      """
    Then the new job's started event came within 100 ms of its request

  @process @M0-W-1620 @M0-W-1120
  Scenario: The worker loads the model and is ready within 60 seconds
    When the worker is started
    Then it answers GET /health with HTTP 200 on the port it was given
    And it became ready within 60 seconds of starting

  @M0-W-1603
  Scenario: An invalid request is refused within 1 ms at p50
    When the client sends 20 invalid requests
    Then the p50 time to refuse one is under 1 ms
