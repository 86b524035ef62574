@M0-W-1300 @M0-W-1302
@checked-d4a857ac
Feature: POST /execute validates every request before inference starts (spec §7.1)
  A request outside the ranges of M0-W-1300 is refused with HTTP 400 and a JSON body with
  the code INVALID_REQUEST (M0-W-1500), before any inference; a request at the edge of each
  range is accepted and streamed.

  Background:
    Given a worker serving its model

  Scenario Outline: A field out of range or of the wrong type is refused: <case>
    When the client sends /execute with "<field>" set to <value>
    Then the answer is HTTP 400 with code INVALID_REQUEST

    Examples:
      | case                         | field       | value                |
      | job_id empty                 | job_id      | ""                   |
      | job_id not a string          | job_id      | 42                   |
      | prompt empty                 | prompt      | ""                   |
      | prompt of 32769 characters   | prompt      | "@chars(32769)"      |
      | prompt not a string          | prompt      | ["hello"]            |
      | max_tokens 0                 | max_tokens  | 0                    |
      | max_tokens 2049              | max_tokens  | 2049                 |
      | max_tokens negative          | max_tokens  | -1                   |
      | max_tokens fractional        | max_tokens  | 1.5                  |
      | max_tokens a string          | max_tokens  | "10"                 |
      | max_tokens a boolean         | max_tokens  | true                 |
      | temperature below 0          | temperature | -0.1                 |
      | temperature above 2          | temperature | 2.01                 |
      | temperature a string         | temperature | "0.5"                |
      | seed negative                | seed        | -1                   |
      | seed above the uint64 range  | seed        | 18446744073709551616 |
      | seed fractional              | seed        | 4.2                  |
      | seed a string                | seed        | "42"                 |

  Scenario Outline: A request without a required field is refused: <field>
    When the client sends /execute without "<field>"
    Then the answer is HTTP 400 with code INVALID_REQUEST

    Examples:
      | field  |
      | job_id |
      | prompt |

  Scenario Outline: A body that is not a JSON object is refused: <body>
    When the client sends /execute with <body> as the body
    Then the answer is HTTP 400 with code INVALID_REQUEST

    Examples:
      | body                |
      | an empty body       |
      | text that is not JSON |
      | truncated JSON      |
      | a JSON array        |
      | a JSON string       |

  Scenario: A body over 1 MiB is refused
    When the client sends /execute with a 1.1 MiB prompt
    Then the answer is HTTP 400 with code INVALID_REQUEST, or HTTP 413

  Scenario Outline: A field at the edge of its range is accepted: <case>
    When the client sends /execute with "<field>" set to <value>
    Then the request is accepted with an SSE stream

    Examples:
      | case                        | field       | value                |
      | max_tokens 1                | max_tokens  | 1                    |
      | max_tokens 2048             | max_tokens  | 2048                 |
      | temperature 0               | temperature | 0.0                  |
      | temperature 2               | temperature | 2.0                  |
      | seed 0                      | seed        | 0                    |
      | seed 2^64-1                 | seed        | 18446744073709551615 |
      | prompt of 32768 characters  | prompt      | "@digits(32768)"     |

  Scenario: A second request with the job_id of a running job is refused
    Given a job that is generating tokens
    When the client sends another request with the same job_id
    Then the answer is HTTP 4xx with code INVALID_REQUEST
