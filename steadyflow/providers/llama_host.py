"""Child-process entry point: a llama-cpp-python OpenAI-compatible server on loopback.

Started by :mod:`steadyflow.providers.local_server` as
``python -m steadyflow.providers.llama_host --model F --port N [--watch-stdin]``.

With ``--watch-stdin`` the server exits as soon as its standard input reaches
end of file. The parent holds the only write end of that pipe, and the kernel
closes it however the parent ends (normal exit, exception, Ctrl-C or SIGKILL),
so a run can never leave an orphan server behind. ``steadyflow local-model
serve`` starts it without the flag, to outlive the command.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading


def _exit_when_stdin_closes() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        # os._exit: uvicorn and llama.cpp threads must not delay or veto this exit
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, load the model and serve until stopped."""
    parser = argparse.ArgumentParser(prog="steadyflow-llama-host")
    parser.add_argument("--model", required=True)
    parser.add_argument("--alias", default="local")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--watch-stdin", action="store_true")
    parser.add_argument(
        "--workers", type=int, default=1, help="serve with this many servers, --threads split between them"
    )
    parser.add_argument(
        "--lookup", type=int, default=0, help="draft this many tokens by prompt lookup (speculative decoding); 0: off"
    )
    parser.add_argument(
        "--logits-all", action="store_true", help="keep every token's logits, so answers can carry log-probabilities"
    )
    parser.add_argument(
        "--library-sampling",
        action="store_true",
        help="let the grammar test the whole vocabulary for every token, as llama-cpp-python does (for comparisons)",
    )
    args = parser.parse_args(argv)
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, name="parent-watch", daemon=True).start()
    if args.workers > 1:
        from steadyflow.providers import llama_pool

        passed = ["--model", args.model, "--alias", args.alias, "--n-ctx", str(args.n_ctx)]
        passed += ["--lookup", str(args.lookup)]
        passed += ["--logits-all"] * args.logits_all + ["--library-sampling"] * args.library_sampling
        threads = max(1, args.threads // args.workers)
        llama_pool.serve(passed, args.host, args.port, args.workers, threads)
        return

    # Imported here so that `--help` and argument errors stay fast.
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from steadyflow.providers import llama_logprobs, llama_sampling

    llama_logprobs.install()  # log-probabilities for the sampled tokens only, not a sort of the vocabulary per token
    if not args.library_sampling:
        llama_sampling.install()  # the grammar tests the greedy winner first, the vocabulary only if it is refused

    model = ModelSettings(
        model=args.model,
        model_alias=args.alias,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        # llama-cpp-python keeps every token's logits by default: ~0.6 MB per token of context and a
        # vocabulary-sized product per prompt token, paid only where log-probabilities are asked for
        logits_all=args.logits_all,
        draft_model="prompt-lookup" if args.lookup else None,
        draft_model_num_pred_tokens=args.lookup or 10,
        verbose=False,
    )
    # interrupt_requests would cut a running completion short when another request arrives
    server = ServerSettings(host=args.host, port=args.port, interrupt_requests=False)
    try:
        app = create_app(server_settings=server, model_settings=[model])
    except (ValueError, OSError, RuntimeError) as exc:
        # one line for the parent to show; a llama.cpp traceback would only bury it
        print(f"cannot load {args.model}: {exc}", file=sys.stderr)
        sys.exit(3)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
