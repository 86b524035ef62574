@model-gpt-oss-20b
@checked-d4a857ac
Feature: GPT-OSS-20B bring-up (spec §12.3.1, M0-W-1823; GPT-style adapter, M0-W-1215)
  Runs only when the worker serves GPT-OSS-20B (MXFP4); skipped with that reason otherwise.

  Background:
    Given a worker serving its model

  @M0-W-1823 @M0-W-1360
  Scenario: /health describes GPT-OSS-20B: MXFP4 weights and the hf-json tokenizer
    When the client gets /health
    Then its "quant_kind" is one of MXFP4
    And its "tokenizer_kind" is one of hf-json

  @M0-W-1823 @M0-W-1215
  Scenario: GPT-OSS-20B streams tokens for a simple prompt
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 8, "temperature": 0}
      """
    Then the terminal event is end
    And at least 1 token event was streamed
