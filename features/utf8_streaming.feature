@M0-W-1824
@checked-d4a857ac
Feature: Streaming is UTF-8 safe (spec §0.2, §8.3, §14.1 item 2, M0-W-1824)
  Every token event holds whole characters only: no code point is split across events, no
  replacement character stands in for a partial one, and every event is valid UTF-8.

  A worker buffers partial multibyte sequences (§8.3) but cannot make bytes that never form a
  character valid: it may replace them with U+FFFD, which is valid UTF-8. So a replacement
  character means a split character only when the model's own bytes are UTF-8 text, as a
  trained model's are; those scenarios (the spec's test) need one. On any model, a split
  character sent as raw bytes shows up as invalid UTF-8 or a lone surrogate.

  Background:
    Given a worker serving its model

  Scenario: Every event is valid UTF-8 on its own, whatever bytes the model emits
    When the client executes:
      """
      {"prompt": "Mixed: 日本語 English العربية 👋", "max_tokens": 48, "temperature": 1.0, "seed": 7}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds half of a surrogate pair

  @model-trained
  Scenario Outline: A multibyte prompt streams whole characters only: <script>
    When the client executes:
      """
      {"prompt": "<prompt>", "max_tokens": 20, "temperature": 0.7, "seed": 7}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds half of a surrogate pair
    And no token text holds a replacement character

    Examples:
      | script        | prompt                        |
      | Chinese       | 你好世界                      |
      | emoji         | Hello 👋 World 🌍             |
      | mixed scripts | Mixed: 日本語 English العربية |

  @model-trained
  Scenario: An answer in Chinese streams whole characters only
    When the client executes:
      """
      {"prompt": "请用中文写一首关于显卡的短诗：", "max_tokens": 32, "temperature": 0}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds half of a surrogate pair
    And no token text holds a replacement character
