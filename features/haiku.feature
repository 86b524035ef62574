@model-qwen2.5
@checked-d4a857ac
Feature: The haiku test of M0 (spec §12.1, M0-W-1800; §12.2.4, M0-W-1826)
  On the Qwen2.5-0.5B test model, the fixed haiku prompt streams tokens and repeats exactly.

  Background:
    Given a worker serving its model

  @M0-W-1800 @M0-W-1030
  Scenario: The haiku prompt streams tokens and repeats exactly with seed 42
    When the client executes:
      """
      {"job_id": "test-haiku-001", "prompt": "Write a haiku about GPU computing", "max_tokens": 50, "temperature": 0.7, "seed": 42}
      """
    Then the events are started, then tokens, then exactly one terminal event and nothing after it
    And the terminal event is end
    And at least 1 token event was streamed
    When the client executes the same request again
    Then both jobs streamed identical tokens

  @M0-W-1826 @M0-W-1032
  Scenario: Greedy decoding of the haiku prompt repeats exactly
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 50, "temperature": 0, "seed": 42}
      """
    And the client executes the same request again
    Then both jobs streamed identical tokens

  @M0-W-1420 @M0-W-1214 @M0-W-1230
  Scenario: Greedy decoding continues the haiku prompt as the reference model does
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 10, "temperature": 0}
      """
    Then the streamed text begins with " and its impact on the development of artificial intelligence"
