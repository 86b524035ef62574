@process
@checked-d4a857ac
Feature: Narration logs and model load progress (spec §13.1, M0-W-1900; §10.3, M0-W-1621)
  The worker narrates its life as events with the context worker_id, job_id, model_ref,
  gpu_device and event; the harness reads them as JSON lines on stdout or stderr.

  @M0-W-1900 @M0-W-1110
  Scenario: Startup is narrated in order with the worker's context
    When the worker is started
    And it becomes ready
    Then its narration has the events startup, model_load_start, model_load_complete and ready, in this order
    And every narration event carries worker_id, model_ref, gpu_device and event
    And every narration event has the worker_id the worker was given

  @M0-W-1621
  Scenario: Model load progress is narrated at 0, 25, 50, 75 and 100 percent
    When the worker is started
    And it becomes ready
    Then its narration has model_load_progress events with percent 0, 25, 50, 75 and 100, in this order
    And they come between model_load_start and model_load_complete

  @M0-W-1900
  Scenario: Each job is narrated with its job_id
    When the worker is started
    And it becomes ready
    And a client executes a short job on it
    Then its narration has execute_start and execute_end events with that job's job_id

  @M0-W-1900 @M0-W-1340
  Scenario: Shutdown is narrated
    When the worker is started
    And it becomes ready
    And it receives SIGTERM
    Then it exits with status 0 within the shutdown timeout
    And its narration has a shutdown event

  @deferred-M1 @M0-W-1901
  Scenario: The end of a job is narrated with its token count and decode time
    When the worker is started
    And it becomes ready
    And a client executes a short job on it
    Then its narration has an execute_end event with the fields tokens_out and decode_time_ms

  @deferred-M1 @M0-W-1902
  Scenario: Narration does not log the raw prompt
    When the worker is started
    And it becomes ready
    And a client executes a short job on it
    Then its output does not contain the job's prompt
