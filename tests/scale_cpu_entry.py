"""Run a launch script under the `deepspeed` launcher on a machine without GPUs (the scale tests' CPU processes).

    deepspeed --num_accelerators 2 tests/scale_cpu_entry.py launch/grpo.py --config ... --deepspeed ...

With `--deepspeed` set, transformers creates its distributed state without a backend when no GPU is present and
then sees one process per rank. Creating that state first with the gloo backend, and telling the training
arguments to use it, gives the real world size. Under `accelerate launch`, `--ddp_backend gloo` does the same.
"""

import os
import runpy
import sys

from accelerate import PartialState

if __name__ == "__main__":
    # The launcher puts --local_rank first; the rank is in LOCAL_RANK as well.
    script, *args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    PartialState(backend="gloo")
    sys.argv = [script, *args, "--accelerator_config", '{"use_configured_state": true}']
    runpy.run_path(script, run_name="__main__")
