@cuda
@checked-d4a857ac
Feature: Weights stay resident in VRAM, quantized (spec §2, M0-W-1011, M0-W-1012)
  Checked from what the worker reports. A worker that keeps its model in host memory
  (resident false) fails these, whatever else its /health says, unless the harness is run with
  --allow-host-memory-worker: then they are skipped and the verdict is NOT VERIFIED.

  Background:
    Given a worker serving its model

  @M0-W-1012 @M0-SYS-2.2.1 @M0-W-1011
  Scenario: The worker reports its weights resident in VRAM
    When the client gets /health
    Then its "resident" is true
    And its "status" is one of healthy
    And its "vram_bytes_used" is a positive integer

  @M0-W-1012 @M0-W-1002
  Scenario: Weights stay resident across jobs
    When the client executes:
      """
      {"prompt": "Write a haiku about GPU computing", "max_tokens": 8, "temperature": 0.7, "seed": 5}
      """
    And the client gets /health
    Then its "resident" is true
    And its "vram_bytes_used" is a positive integer

  @M0-W-1201 @M0-W-1220
  Scenario: The weights stay quantized in VRAM
    Given the model file is on this machine
    When the client gets /health
    Then its "vram_bytes_used" is less than 4 times the size of the model file

  @process @M0-W-1020 @M0-W-1111
  Scenario: Too little free VRAM at startup stops the worker with the numbers it needed
    Given the GPU keeps less free memory than the model file needs
    When the worker is started
    Then it exits with status 1 within the startup timeout
    And its output names the required and available bytes, the GPU device and the model path
