"""SFT cold start.

    accelerate launch launch/sft.py --config configs/sft/tiny_cpu.yaml [--any_field value ...]

Every field of `SFTScriptArguments`, `trl.SFTConfig` and `trl.ModelConfig` can be set in the YAML recipe or
overridden on the command line (`--help` lists them).
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

from accelerate import PartialState
from trl import ModelConfig, SFTConfig

from launch.parser import Parser
from sft import SFTScriptArguments, run_sft

if __name__ == "__main__":
    parser = Parser((SFTScriptArguments, SFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    run_sft(script_args, training_args, model_args)
    # Leave no process group for the interpreter to tear down at exit (it can abort a multi-process run there).
    PartialState().destroy_process_group()
