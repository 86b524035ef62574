@checked-d4a857ac
Feature: Results stream as Server-Sent Events (spec §7.2, M0-W-1310..1312)
  POST /execute answers with an SSE stream: one `started` event, the tokens, then exactly
  one terminal event (`end` or `error`), each event carrying the payload of §7.2.

  Background:
    Given a worker serving its model

  @M0-W-1310 @M0-W-1311 @M0-W-1300
  Scenario: A job streams started, its tokens, then one end event
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 8, "temperature": 0}
      """
    Then the answer is an SSE stream
    And the events are started, then tokens, then exactly one terminal event and nothing after it
    And the terminal event is end

  @M0-W-1312
  Scenario: The started event names the job, the model and an ISO-8601 start time
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 4, "temperature": 0}
      """
    Then the started event has the request's job_id
    And the started event has a non-empty string "model"
    And the started event has an ISO-8601 date and time in "started_at"

  @M0-W-1312
  Scenario: Token events carry their text and consecutive indices from 0
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0.7, "seed": 3}
      """
    Then every token event has a string "t" and an integer "i"
    And the token indices run 0, 1, 2, ... without gaps

  @M0-W-1312
  Scenario: The end event counts the tokens and reports the decode time
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0.7, "seed": 3}
      """
    Then the end event has an integer "tokens_out" equal to the number of token events
    And the end event has a non-negative number "decode_time_ms"

  @M0-W-1310
  Scenario: Only the event names of the spec are used
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 6, "temperature": 0}
      """
    Then every event is named started, token, metrics, end or error
    And every event's data is a JSON object

  @M0-W-1310 @M0-W-1330
  Scenario: Tokens are sent as they are generated, not held back until the end
    Given a job that is generating tokens
    When the client cancels it as soon as its first token has arrived
    Then the stream ends before max_tokens tokens were sent

  @M0-W-1300
  Scenario Outline: max_tokens bounds the number of tokens: <max_tokens>
    When the client executes:
      """
      {"prompt": "Count from one to one hundred: one, two, three,", "max_tokens": <max_tokens>, "temperature": 0.9, "seed": 11}
      """
    Then the terminal event is end
    And at most <max_tokens> token events were streamed

    Examples:
      | max_tokens |
      | 1          |
      | 3          |
      | 16         |
