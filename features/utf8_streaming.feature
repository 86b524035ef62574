@M0-W-1824
Feature: Streaming is UTF-8 safe (spec §0.2, §14.1 item 2, M0-W-1824)
  Every token event holds whole characters only: no code point is split across events, no
  replacement character stands in for a partial one, and every event is valid UTF-8.

  Background:
    Given a worker serving its model

  Scenario Outline: A multibyte prompt streams whole characters only: <script>
    When the client executes:
      """
      {"prompt": "<prompt>", "max_tokens": 20, "temperature": 0.7, "seed": 7}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds a replacement character or half of a surrogate pair

    Examples:
      | script        | prompt                        |
      | Chinese       | 你好世界                      |
      | emoji         | Hello 👋 World 🌍             |
      | mixed scripts | Mixed: 日本語 English العربية |

  Scenario: An answer in Chinese streams whole characters only
    When the client executes:
      """
      {"prompt": "请用中文写一首关于显卡的短诗：", "max_tokens": 32, "temperature": 0}
      """
    Then the terminal event is end
    And every event's data is valid UTF-8 JSON
    And no token text holds a replacement character or half of a surrogate pair
