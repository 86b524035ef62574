@process
@checked-d4a857ac
Feature: Shutdown (spec §7.5, M0-W-1340; §15.1 item 11; §10.4, M0-W-1630)
  M0 shuts down on SIGTERM with exit status 0. The /shutdown endpoint and the 5 s deadline
  are deferred to M1: measured and reported, never failing the M0 verdict.

  @M0-W-1340 @M0-W-1401
  Scenario: SIGTERM stops a ready worker with exit status 0
    When the worker is started
    And it becomes ready
    And it receives SIGTERM
    Then it exits with status 0 within the shutdown timeout

  @M0-W-1340
  Scenario: SIGTERM during a job stops the worker with exit status 0
    When the worker is started
    And it becomes ready
    And a client starts a long job on it
    And it receives SIGTERM
    Then it exits with status 0 within the shutdown timeout
    And the job's stream has ended

  @deferred-M1 @M0-W-1630
  Scenario: SIGTERM shutdown completes within 5 seconds
    When the worker is started
    And it becomes ready
    And it receives SIGTERM
    Then it exits with status 0 within 5 seconds

  @deferred-M1 @M0-W-1340
  Scenario: POST /shutdown answers 202, refuses new jobs with 503 and exits 0
    When the worker is started
    And it becomes ready
    And a client posts /shutdown
    Then the shutdown is answered with HTTP 202
    And a new /execute request is answered with HTTP 503 or the connection is refused
    And it exits with status 0 within the shutdown timeout

  @cuda @M0-W-1401
  Scenario: A worker that exits gives its GPU memory back
    Given the GPU's free memory is noted
    When the worker is started
    And it becomes ready
    And it receives SIGTERM
    Then it exits with status 0 within the shutdown timeout
    And the GPU's free memory is back within 64 MiB of what was noted
