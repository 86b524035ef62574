@M0-W-1021 @M0-W-1825
@checked-d4a857ac
Feature: A job that overflows the context fails with VRAM_OOM and the worker recovers (spec §2.3)
  A request that is valid but needs more KV cache than the worker has fails on its own stream
  with an `error` event coded VRAM_OOM; the process stays up and serves the next request.

  Background:
    Given a worker serving its model

  @M0-W-1510 @M0-W-1500
  Scenario: 32768 digits plus 2048 new tokens overflow the context; the next job runs
    Given the worker reports a context length of at most 32768 tokens
    When the client executes:
      """
      {"prompt": "@digits(32768)", "max_tokens": 2048, "temperature": 0.7}
      """
    Then the answer is an SSE stream
    And the stream ends within 60 seconds with an error event with code VRAM_OOM
    And the error event has a string "message" and a boolean "retriable"
    And the worker still answers GET /health
    And the worker then completes a new job
