@M0-W-1301
@checked-d4a857ac
Feature: Jobs run one at a time (spec §7.1, M0-W-1301)
  With batch=1, a worker that receives two jobs at once runs them one after the other: no
  token of one job is streamed while the other is still streaming.

  Background:
    Given a worker serving its model

  Scenario: Two clients at once are served one after the other
    When two clients execute at the same time:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 12, "temperature": 0}
      """
    Then both jobs end with an end event
    And no token of the later job arrived before the earlier job's terminal event
