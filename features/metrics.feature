@deferred-M1 @M0-W-1350
@checked-d4a857ac
Feature: GET /metrics in Prometheus text format (spec §7.6; deferred to M1 by §0.0)
  Optional in M0: measured and reported, never failing the M0 verdict.

  Background:
    Given a worker serving its model

  Scenario: /metrics answers the basic worker metrics in Prometheus text format
    When the client executes:
      """
      {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
      """
    And the client gets /metrics
    Then the answer is HTTP 200 in Prometheus text format
    And it has the metrics worker_vram_bytes, worker_requests_total, worker_tokens_generated_total, worker_inference_duration_ms and worker_uptime_seconds
