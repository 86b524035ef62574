@robustness
@checked-d4a857ac
Feature: Robustness profile: malformed models, random requests, a soak (opt-in: --robustness)
  The other features check each rule once, politely. This profile tries the worker the way
  broken files and production traffic will: malformed copies of the model under test,
  thousands of random request bodies, and many concurrent jobs with cancels and clients that
  go away. Every loop is bounded in count (--robustness-bodies, --robustness-jobs,
  --robustness-clients) and in time (--robustness-budget seconds per check); the same
  --robustness-seed sends the same bodies and jobs again.

  @process @M0-W-1210 @M0-W-1211 @M0-W-1212
  Scenario Outline: Malformed copies of the model stop the worker with exit 1 and MODEL_LOAD_FAILED: <family>
    Given the malformed copies of the model under test with <family>
    When the worker is started with each of them
    Then each start exits with status 1 and names MODEL_LOAD_FAILED within the load deadline

    Examples:
      | family       |
      | truncations  |
      | bad versions |
      | bad counts   |
      | bad offsets  |
      | bad types    |
      | bad shapes   |

  @M0-W-1302 @M0-W-1500
  Scenario: Random /execute and /cancel bodies all get an answer below 500, and the worker keeps serving
    When the client sends the random request bodies
    Then every body got a complete answer with a status below 500
    And every refusal is JSON with an error code, INVALID_REQUEST for a 400
    And the worker still completes a job

  @M0-W-1311 @M0-W-1330 @M0-SYS-6.3.5
  Scenario: A soak of concurrent jobs, some cancelled, some dropped: every kept stream ends with one terminal event
    When concurrent clients run the soak's jobs, cancelling some and dropping others
    Then every kept stream ends with exactly one terminal event, a cancelled one with CANCELLED or its end
    And the worker still completes a job

  @deferred-M1 @M0-W-1611
  Scenario: Streams dropped by their client, again and again, do not hold the worker
    When a client drops a generating stream 10 times over, each followed by a short job
    Then every short job started within 2 seconds of its request
    And the worker still completes a job
