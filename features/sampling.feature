@rev-84202fea
@checked-84202fea
Feature: Sampling parameters of the next spec revision (rev 84202fea: M0-W-1421 extended, M0-W-1422)
  top_p, top_k, repetition_penalty and stop join the request. Against the revision of record
  these scenarios are informational; run with --spec-revision 84202fea to hold a worker to them.

  Background:
    Given a worker serving its model

  @M0-W-1421 @M0-W-1302
  Scenario Outline: A sampling parameter out of range or of the wrong type is refused: <case>
    When the client sends /execute with "<field>" set to <value>
    Then the answer is HTTP 400 with code INVALID_REQUEST

    Examples:
      | case                           | field              | value      |
      | top_p above 1                  | top_p              | 1.01       |
      | top_p below 0                  | top_p              | -0.1       |
      | top_p a string                 | top_p              | "0.9"      |
      | top_k negative                 | top_k              | -1         |
      | top_k fractional               | top_k              | 2.5        |
      | top_k above the vocabulary     | top_k              | 1000000000 |
      | repetition_penalty above 2     | repetition_penalty | 2.01       |
      | repetition_penalty negative    | repetition_penalty | -0.5       |

  @M0-W-1422 @M0-W-1302
  Scenario Outline: A stop list that breaks the rules is refused: <case>
    When the client sends /execute with "stop" set to <value>
    Then the answer is HTTP 400 with code INVALID_REQUEST

    Examples:
      | case                 | value                     |
      | not an array         | "END"                     |
      | five sequences       | ["a", "b", "c", "d", "e"] |
      | a non-string element | [1]                       |

  @M0-W-1421
  Scenario: top_k 1 always takes the most likely token, whatever the seed
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0}
      """
    And the client executes it again with these fields:
      """
      {"temperature": 1.0, "top_k": 1, "seed": 1}
      """
    And the client executes it again with these fields:
      """
      {"temperature": 1.0, "top_k": 1, "seed": 2}
      """
    Then all these jobs streamed identical tokens

  @M0-W-1421
  Scenario: A tiny top_p keeps only the most likely token
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0}
      """
    And the client executes it again with these fields:
      """
      {"temperature": 1.0, "top_p": 1e-9, "seed": 3}
      """
    Then all these jobs streamed identical tokens

  @M0-W-1421
  Scenario: The neutral values of the new parameters change nothing
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0.8, "seed": 5}
      """
    And the client executes it again with these fields:
      """
      {"top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "stop": []}
      """
    Then all these jobs streamed identical tokens

  @M0-W-1422
  Scenario: A stop sequence ends the job where it appears
    When the client executes:
      """
      {"prompt": "Count from one to one hundred: one, two, three,", "max_tokens": 16, "temperature": 0}
      """
    And the client executes it again with the text of a token after the third as a stop sequence
    Then the second job ends with an end event no later than that token
    And its text is the beginning of the first job's text
