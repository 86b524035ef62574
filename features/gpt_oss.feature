@model-gpt-oss
@checked-d4a857ac
Feature: The GPT-OSS path: gpt-oss, MXFP4 and hf-json models (spec §0.0, M0-W-1823, M0-W-1435, M0-W-1360)
  Runs wherever the worker serves a gpt-oss, MXFP4 or hf-json model: its /health reports
  quant_kind MXFP4 or tokenizer_kind hf-json, or its model's name says gpt-oss. A synthetic
  gpt-oss model (python -m reference_worker.synthetic --arch gpt-oss --tokenizer-json) takes
  this path as GPT-OSS-20B does; skipped with that reason on any other model. The bring-up's
  VRAM envelope is GPT-OSS-20B's own (16 GB +-20%) and runs only on a model named gpt-oss-20b.

  Background:
    Given a worker serving its model

  @M0-W-1435 @M0-W-1823
  Scenario: /health names the weight format the model file stores
    Given the model file is on this machine
    When the client gets /health
    Then its "quant_kind" is the spec's name for the model file's general.file_type

  @M0-W-1360 @M0-W-1361
  Scenario: /health says hf-json when a tokenizer.json lies beside the model, else gguf-bpe
    Given the model file is on this machine
    When the client gets /health
    Then its "tokenizer_kind" is hf-json with a tokenizer.json beside the model file, else gguf-bpe

  @M0-W-1215 @M0-W-1311
  Scenario: A simple prompt streams tokens in order to one end event
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 16, "temperature": 0}
      """
    Then the events are started, then tokens, then exactly one terminal event and nothing after it
    And the terminal event is end
    And at least 1 token event was streamed
    And the token indices run 0, 1, 2, ... without gaps

  @M0-W-1215
  Scenario: A prompt longer than GPT-OSS-20B's sliding window (128 tokens) still streams
    When the client executes:
      """
      {"prompt": "The quick brown fox jumps over the lazy dog. A GPU computes many small things at the same time, and a worker streams the tokens it samples back to the caller, one event at a time. The quick brown fox jumps over the lazy dog. A GPU computes many small things at the same time, and a worker streams the tokens it samples back to the caller, one event at a time. The quick brown fox jumps over the lazy dog. A GPU computes many small things at the same time, and a worker streams the tokens it samples back to the caller, one event at a time. The quick brown fox jumps over the lazy dog.", "max_tokens": 8, "temperature": 0}
      """
    Then the terminal event is end
    And at least 1 token event was streamed

  @M0-W-1824
  Scenario: Every event is valid UTF-8 on its own
    When the client executes:
      """
      {"prompt": "<|start|>user<|message|>Mixed: 日本語 English العربية 👋<|end|>", "max_tokens": 32, "temperature": 1.0, "seed": 7}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds half of a surrogate pair

  @M0-W-1032 @M0-W-1826
  Scenario: Temperature 0 gives the same tokens twice
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0, "seed": 1}
      """
    And the client executes the same request with seed 2
    Then both jobs streamed identical tokens

  @M0-W-1030
  Scenario: The same seed gives the same tokens at temperature 0.7
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0.7, "seed": 42}
      """
    And the client executes the same request again
    Then both jobs streamed identical tokens

  @model-gpt-oss-20b @cuda @M0-W-1823 @M0-W-1360
  Scenario: GPT-OSS-20B brings up: MXFP4 and hf-json, resident, in its 16 GB VRAM envelope
    When the client gets /health
    Then its "quant_kind" is one of MXFP4
    And its "tokenizer_kind" is one of hf-json
    And its "resident" is true
    And its "vram_bytes_used" is within 20% of 16000000000
