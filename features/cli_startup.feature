@process
@checked-d4a857ac
Feature: Command line and startup (spec §5, §6.2, M0-W-1100..1120)
  The worker takes --worker-id, --model, --gpu-device and --port, checks them, loads the
  model and serves; a bad argument or a bad model stops it with a non-zero exit status and
  a message that says what was wrong.

  @M0-W-1100 @M0-W-1110 @M0-W-1200 @M0-SYS-6.3.1
  Scenario: With the four required arguments the worker loads the model and serves
    When the worker is started
    Then it answers GET /health with HTTP 200 on the port it was given

  @optional @M0-W-1101
  Scenario: The optional arguments of M0-W-1101 are accepted
    When the worker is started with the extra arguments "--max-tokens-out 2048 --inference-timeout-sec 300"
    Then it answers GET /health with HTTP 200 on the port it was given

  @M0-SYS-6.3.2 @M0-SYS-2.4.1 @M0-SYS-2.4.2
  Scenario: Two workers run as separate processes: stopping one leaves the other serving
    When the worker is started
    And it becomes ready
    And a second worker is started on another port
    And it becomes ready too
    And the first worker receives SIGTERM
    Then the second worker completes a job

  @M0-W-1100 @M0-W-1111
  Scenario Outline: An invalid argument stops the worker with a message naming it: <case>
    When the worker is started with "<option>" set to "<value>"
    Then it exits with a non-zero status within the startup timeout
    And its output names "<option>"

    Examples:
      | case                      | option       | value                    |
      | worker id not a UUID      | --worker-id  | not-a-uuid               |
      | worker id missing         | --worker-id  | (missing)                |
      | model file does not exist | --model      | /nonexistent/model.gguf  |
      | model missing             | --model      | (missing)                |
      | gpu device not a number   | --gpu-device | first                    |
      | gpu device negative       | --gpu-device | -1                       |
      | gpu device missing        | --gpu-device | (missing)                |
      | port below 1024           | --port       | 80                       |
      | port above 65535          | --port       | 70000                    |
      | port not a number         | --port       | http                     |
      | port missing              | --port       | (missing)                |

  @M0-W-1100 @M0-W-1111
  Scenario: A port that another program holds stops the worker
    Given a port that another program listens on
    When the worker is started on that port
    Then it exits with a non-zero status within the startup timeout
    And its output names the port

  @M0-W-1210 @M0-W-1211 @M0-W-1111 @M0-W-1500
  Scenario Outline: A model file that cannot be loaded stops the worker with MODEL_LOAD_FAILED: <case>
    Given a model file that is <case>
    When the worker is started with that model
    Then it exits with a non-zero status within the startup timeout
    And its output contains "MODEL_LOAD_FAILED"
    And its output names the model path and the GPU device

    Examples:
      | case                             |
      | random bytes, not GGUF           |
      | the first 4096 bytes of a GGUF   |
      | a GGUF header of version 99      |

  @M0-W-1212 @M0-W-1111 @M0-W-1500
  Scenario: A GGUF model of an unsupported architecture stops the worker with MODEL_LOAD_FAILED
    Given a model file that is a GGUF whose general.architecture is "mamba"
    When the worker is started with that model
    Then it exits with a non-zero status within the startup timeout
    And its output contains "MODEL_LOAD_FAILED"
    And its output names the model path and the GPU device
