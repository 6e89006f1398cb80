"""SFT cold start.

    accelerate launch launch/sft.py --config configs/sft/tiny_cpu.yaml [--any_field value ...]

Every field of `SFTScriptArguments`, `trl.SFTConfig` and `trl.ModelConfig` can be set in the YAML recipe or
overridden on the command line (`--help` lists them).
"""

import sys
from pathlib import Path

# Python puts this script's folder first on sys.path, where this file would shadow the `sft` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from accelerate import PartialState
from trl import ModelConfig, SFTConfig, TrlParser

from sft import SFTScriptArguments, run_sft

if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    run_sft(script_args, training_args, model_args)
    # Leave no process group for the interpreter to tear down at exit (it can abort a multi-process run there).
    PartialState().destroy_process_group()
