"""GRPO with the saliency-alignment reward.

    deepspeed launch/grpo.py --config configs/grpo/tiny_cpu.yaml [--any_field value ...]
    accelerate launch launch/grpo.py --config configs/grpo/tiny_cpu.yaml

Every field of `GRPOScriptArguments`, `rl.SaliencyGRPOConfig` (TRL's GRPOConfig + saliency capture) and
`trl.ModelConfig` can be set in the YAML recipe or overridden on the command line (`--help` lists them).
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

from accelerate import PartialState
from trl import ModelConfig

from launch.parser import Parser
from rl import GRPOScriptArguments, SaliencyGRPOConfig, run_grpo

if __name__ == "__main__":
    parser = Parser((GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config()
    run_grpo(script_args, training_args, model_args)
    # Leave no process group for the interpreter to tear down at exit (it can abort a multi-process run there).
    PartialState().destroy_process_group()
