@M0-W-1320
@checked-d4a857ac
Feature: GET /health describes the worker and its model (spec §7.3, §8.5)

  Background:
    Given a worker serving its model

  @M0-W-1364 @M0-W-1011
  Scenario: /health reports every required field with its type
    When the client gets /health
    Then the answer is HTTP 200 with a JSON object
    And its fields have these types:
      | field           | type            |
      | status          | string          |
      | resident        | boolean         |
      | quant_kind      | string          |
      | vram_bytes_used | integer         |
      | tokenizer_kind  | string          |
      | vocab_size      | integer         |
      | context_length  | integer or null |
    And its optional fields, where reported, have these types:
      | field                | type    |
      | model                | string  |
      | uptime_seconds       | number  |
      | sm                   | integer |
      | cuda_runtime_version | string  |

  @M0-W-1364
  Scenario: /health values are consistent with a loaded model
    When the client gets /health
    Then its "status" is one of healthy, unhealthy
    And its "tokenizer_kind" is one of gguf-bpe, hf-json
    And its "vocab_size" is a positive integer
    And its "context_length" is a positive integer or null
    And its "vram_bytes_used" is a non-negative integer

  @M0-W-1201
  Scenario: /health names the stored quantization as GGUF names it (§7.3: "MXFP4" | "Q4_K_M" | "Q4_0")
    When the client gets /health
    Then its "quant_kind" is a GGUF file type name

  @M0-W-1201 @informational
  Scenario: The model's quantization is one of M0's three formats
    When the client gets /health
    Then its "quant_kind" is among M0's quantization formats MXFP4, Q4_K_M, Q4_0

  Scenario: A worker that serves requests reports itself healthy
    When the client gets /health
    Then its "status" is one of healthy

  @M0-W-1001 @M0-W-1002 @M0-W-1312
  Scenario: The worker keeps one model for its lifetime, and names it in started events
    When the client gets /health
    And the client executes:
      """
      {"prompt": "Hello", "max_tokens": 2, "temperature": 0}
      """
    And the client executes:
      """
      {"prompt": "Goodbye", "max_tokens": 2, "temperature": 0}
      """
    Then both started events name the same model
    And /health, asked again, reports the same model, quant_kind, vocab_size and context_length

  @model-qwen2.5 @M0-W-1360 @M0-W-1230
  Scenario: /health describes the Qwen2.5-0.5B test model
    When the client gets /health
    Then its "tokenizer_kind" is one of gguf-bpe
    And its "quant_kind" is one of Q4_K_M
    And its "vocab_size" is 151936
    And its "context_length" is 32768
