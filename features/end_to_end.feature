@process @M0-W-1820
@checked-d4a857ac
Feature: End-to-end test of M0 (spec §12.3, M0-W-1820)
  Start a worker on its model, run a job, check the stream and that temperature 0 repeats,
  and shut it down.

  Scenario: A worker started by the harness serves reproducible jobs and shuts down cleanly
    When the worker is started
    And it becomes ready
    And a client executes a greedy job on it twice
    Then both jobs streamed identical tokens
    And both jobs end with an end event
    When it receives SIGTERM
    Then it exits with status 0 within the shutdown timeout
