@checked-d4a857ac
Feature: Test reproducibility: seeds and temperature 0 (spec §3, M0-W-1030..1032, M0-W-1826)
  Same model, same prompt, same seed, temperature 0 give the same tokens; the seed drives
  sampling at temperature above 0; a job without a seed reports the seed it used.

  Background:
    Given a worker serving its model

  @M0-SYS-2.3.1 @M0-W-1032 @M0-W-1421 @M0-W-1826
  Scenario: Temperature 0 is greedy: the same prompt gives the same tokens whatever the seed
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0, "seed": 1}
      """
    And the client executes the same request with seed 2
    Then both jobs streamed identical tokens

  @M0-SYS-2.3.1 @M0-W-1030 @M0-W-1421
  Scenario: The same seed gives the same tokens at temperature 0.7
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0.7, "seed": 42}
      """
    And the client executes the same request again
    Then both jobs streamed identical tokens

  @M0-W-1030 @M0-W-1421
  Scenario: Different seeds give different tokens at temperature 1.5
    When the client executes this request with seeds 1, 2, 3, 4 and 5:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 1.5}
      """
    Then at least two of the jobs streamed different tokens

  @M0-W-1030
  Scenario: A job without a seed reports the seed it used, and that seed reproduces it
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 1.0}
      """
    Then the stream reports the seed it used as an unsigned 64-bit integer
    When the client executes the same request with the reported seed
    Then both jobs streamed identical tokens
