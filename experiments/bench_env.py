"""Environment throughput benchmark (random actions; observations and neighbour table every step).

    python -m experiments.bench_env --scenario battle --num-agents 10000 --json out.json
    python -m experiments.bench_env --scenario jungle --num-agents 100 1000 10000
    python -m experiments.bench_env --scenario deception --env landmark_sight=4 observe_time=True

Each agent count runs in a fresh process (so ``peak_rss_mb`` is its own). ``--num-agents`` picks the
nearest preset density and sizes the grid for it. By default ``num_envs = max(1, 10000 // N)`` so
every step carries about 10,000 agents. Reported speed is the median of ``--repeats`` timed calls
after a warm-up call.
"""

from __future__ import annotations

import ast
import dataclasses
import statistics

import jax
import jax.numpy as jnp
import tyro

import envs
from experiments.common import machine, peak_rss_mb, run_module, time_compiled, write_json


@dataclasses.dataclass
class Args:
    """Environment benchmark settings."""

    scenario: str = "battle"
    """jungle, battle or deception."""
    num_agents: tuple[int, ...] = (10000,)
    """Agent counts to measure (one process each)."""
    num_envs: int = 0
    """Environments stepped in parallel (vmap); 0 = max(1, 10000 // num_agents)."""
    steps: int = 0
    """Steps per timed call (one lax.scan); 0 = enough for about 2M agent-steps."""
    repeats: int = 5
    """Timed calls after the warm-up (the median is reported)."""
    seed: int = 0
    env: tuple[str, ...] = ()
    """Environment config overrides as FIELD=VALUE (Python literals), e.g. landmark_sight=4."""
    json: str | None = None
    """Write the results here as JSON."""
    quiet: bool = False
    """Do not print the table."""


def parse_overrides(pairs: tuple[str, ...]) -> dict:
    """``("landmark_sight=4", "observe_time=True")`` -> ``{"landmark_sight": 4, ...}``.

    Raises:
      ValueError: an entry without ``=``, naming it.
    """
    overrides = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"invalid --env entry {pair!r}: write FIELD=VALUE")
        try:
            overrides[field] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[field] = value
    return overrides


def measure(scenario: str, num_agents: int, num_envs: int, steps: int, repeats: int, seed: int,
            env_overrides: tuple[str, ...] = ()):  # fmt: skip
    """Time ``steps`` random-action steps of ``num_envs`` envs of about ``num_agents`` agents
    (``env_overrides``: FIELD=VALUE settings of the env config)."""
    config = envs.sized_config(scenario, num_agents, **parse_overrides(env_overrides))
    env = envs.make_env(config)
    params = env.default_params()
    num_envs = num_envs or max(1, 10000 // config.num_agents)
    steps = steps or max(20, 2_000_000 // (config.num_agents * num_envs))

    @jax.jit
    def rollout(key):
        key, reset_key = jax.random.split(key)
        _, state = env.batch_reset(jax.random.split(reset_key, num_envs), params)

        def body(carry, key):
            state, checksum = carry
            action_key, step_key = jax.random.split(key)
            actions = jax.random.randint(action_key, (num_envs, env.num_agents), 0, env.num_actions)
            obs, state, reward, _, _, _ = env.batch_step(
                jax.random.split(step_key, num_envs), state, actions, params
            )
            checksum += jnp.sum(reward) + jnp.sum(obs.features) + jnp.sum(obs.neighbour_mask)
            return (state, checksum), None

        (_, checksum), _ = jax.lax.scan(body, (state, 0.0), jax.random.split(key, steps))
        return checksum

    one_env = jax.eval_shape(env.reset, jax.random.key(0), params)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(one_env))
    keys = iter(jax.random.split(jax.random.key(seed), repeats + 1))
    first, times = time_compiled(lambda: rollout(next(keys)), repeats)
    seconds = statistics.median(times)
    agent_steps = config.num_agents * num_envs * steps
    return {
        "scenario": scenario,
        "env_overrides": list(env_overrides),
        "num_agents": config.num_agents,
        "grid": [config.height, config.width],
        "density": round(config.density, 4),
        "num_envs": num_envs,
        "steps": steps,
        "repeats": repeats,
        "seconds_median": seconds,
        "agent_steps_per_s": agent_steps / seconds,
        "ns_per_agent_step": 1e9 * seconds / agent_steps,
        "compile_s": first - seconds,
        "peak_rss_mb": peak_rss_mb(),
        "state_bytes_per_env": state_bytes,
        "state_bytes_per_agent": state_bytes / config.num_agents,
        **machine(),
    }


def main(args: Args) -> list[dict]:
    if len(args.num_agents) == 1:
        rows = [
            measure(
                args.scenario,
                args.num_agents[0],
                args.num_envs,
                args.steps,
                args.repeats,
                args.seed,
                args.env,
            )
        ]
    else:  # one fresh process per size, so each peak RSS is its own
        rows = []
        for n in args.num_agents:
            rows += run_module("experiments.bench_env", "--scenario", args.scenario,
                               "--num-agents", str(n), "--num-envs", str(args.num_envs),
                               "--steps", str(args.steps), "--repeats", str(args.repeats),
                               "--seed", str(args.seed), "--quiet",
                               *(["--env", *args.env] if args.env else []))  # fmt: skip
    if not args.quiet:
        header = f"{'N':>7} {'envs':>5} {'steps':>6} {'agent-steps/s':>14} {'ns/agent-step':>14}"
        print(f"{args.scenario} on {rows[0]['backend']} ({rows[0]['device']})")
        print(header + f" {'compile s':>10} {'peak MiB':>9} {'state B/agent':>14}")
        for r in rows:
            print(
                f"{r['num_agents']:>7} {r['num_envs']:>5} {r['steps']:>6} "
                f"{r['agent_steps_per_s']:>14,.0f} {r['ns_per_agent_step']:>14.1f} "
                f"{r['compile_s']:>10.2f} {r['peak_rss_mb']:>9.0f} "
                f"{r['state_bytes_per_agent']:>14.0f}"
            )
    write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main(tyro.cli(Args))
