"""Can the decentralised ego-graph policy copy Battle's centralised planner? (DAgger)

    python -m experiments.battle_imitation --iterations 6 --games 256 --json out.json

The ``lookahead`` planner (``battle_reference.planner``) beats the scripted team by about +85 to
+97 terminal reward x100 while every learner here stays below 0. This experiment asks whether
the gap is one of search (the learner never finds the winning play) or of information (the
winning play is not readable from a 3x3 window and messages from a 2-hop ego-graph): it trains
Q-MARL's network (``qmarl_ppo``'s, the Battle default) to imitate the planner by DAgger (Ross et
al. 2011). Iteration 0 plays ``games`` games with the planner, later ones with the student (the
scripted team plays team 1 throughout); every state visited is labelled with the planner's joint
action, added to one growing data set, and the student is refit on all of it (``epochs`` passes
of cross-entropy: each ego-graph node of an alive team-0 agent is labelled with its agent's
planner action, as the RL losses label nodes with executed actions). After each iteration the
student plays ``eval_episodes`` games against the scripted team (``qmarl_jax.evaluate``).

Prints and saves per iteration: the data set's size, the student's agreement with the planner's
labels (on the data it was fitted on; and, before fitting, on the iteration's new states, overall
and on the agent-steps where the planner departs from ``pack``), and its win / draw / loss rates
and terminal reward x100 with 95% intervals.

``--teacher strike`` labels with ``envs.opponents.strike_actions`` instead (``pack`` plus one
step of foresight, +71.5 against the scripted team): a deterministic rule that reads only the
enemies within distance 2 of its agent after their predicted move, so whether the student can
copy it asks about the window and the ego-graph, not about search. ``--teacher strike2`` and
``--teacher rollout`` (the ``kickstart`` preset's teacher, +97.4) label with those rules;
``--view-radius 3 --graph-radius 2`` gives the student that preset's network and ``--width`` a
wider one. ``--departure-weight`` counts the labels that depart from ``pack`` more in the loss.

``--teacher-games G`` also labels ``G`` games of the teacher's own, never fitted, and reports
after every iteration the student's agreement on them beside its agreement on the states it was
fitted on (``fitted_agreement``): with ``--iterations 1`` and many ``--epochs`` this separates
what the network cannot represent (both low) from what the data cannot teach (fitted high,
unseen low).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro
from flax import struct

from envs.base import require
from envs.opponents import make_controller, pack_actions
from experiments.battle_reference import planner, reference_policy
from experiments.common import machine, write_json
from qmarl_jax.algos.common import per_node
from qmarl_jax.checkpoint import Checkpointer, save_config
from qmarl_jax.config import TrainConfig, make_config
from qmarl_jax.evaluate import Evaluator, evaluation_config
from qmarl_jax.train import Trainer


@dataclasses.dataclass
class Args:
    """Imitation settings (Battle ``tiny``, the default config's network and view)."""

    iterations: int = 6
    """DAgger iterations (0: the planner plays; later: the student plays)."""
    games: int = 256
    """Games played and labelled per iteration."""
    epochs: int = 4
    """Passes over the whole data set after each iteration."""
    departure_weight: float = 1.0
    """Weight in the loss of a label that departs from ``pack``'s action (the teacher's planning,
    3-7% of the labels) relative to one that does not."""
    minibatch: int = 256
    """States per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    teacher: str = "planner"
    """The labels: ``planner`` (the centralised ``lookahead`` over ``pack``), ``strike`` (the
    local one-step rule ``envs.opponents.strike_actions``, a deterministic function of the
    state), ``strike2`` (``strike`` planned once more) or ``rollout`` (each agent's own two-step
    rollouts over ``strike``: the ``kickstart`` preset's teacher)."""
    candidates: int = 8
    """The planner's joint actions per step (``battle_reference --lookahead-candidates``)."""
    horizon: int = 3
    """The planner's rollout length."""
    view_radius: int = 1
    """The student's observation window radius (1: the SPEC's 3x3)."""
    graph_radius: int | None = None
    """Chebyshev radius of the student's neighbour edges (None: the env's 1; 2 with
    ``--view-radius 3`` is the ``kickstart`` preset's network)."""
    width: int = 64
    """Hidden width of the student's network (``TrainConfig.width``)."""
    eval_episodes: int = 1000
    teacher_games: int = 0
    """Games the teacher plays once, on a key of their own, whose labelled states are never
    fitted: after every iteration the student's agreement on them is reported (0: off). With
    ``--iterations 1`` (the teacher's own games only, no DAgger shift) and many ``epochs`` this
    asks what the network can copy at all: compare ``fitted_agreement`` (the fitted states)
    with ``teacher_games_agreement`` across ``--width`` or ``--view-radius``."""
    seed: int = 0
    run_dir: str | None = None
    """Also save the student as a run directory at batch 0 (config + checkpoint): evaluate it
    with ``experiments.evaluate --run DIR``, fine-tune it by RL with ``experiments.train
    --init-from DIR`` (any settings of the same network; ``--critic-warmup K`` trains the
    critic alone first) or ``--resume DIR`` (the student's own config)."""
    json: str | None = None


@struct.dataclass
class Labelled:
    """States with the teacher's labels, flattened over games and steps (leading axis M).

    Attributes:
      features: float32[M, N, F] observations.
      grids: the env's grids (ego-graphs are built from them when training).
      labels: int32[M, N] the teacher's action of every agent.
      weight: bool[M, N] alive team-0 agents of games still running.
    """

    features: jax.Array
    grids: object
    labels: jax.Array
    weight: jax.Array


#: The local rules and per-agent planners that label each agent's move (``reference_policy``).
RULE_TEACHERS = ("strike", "strike2", "rollout")
TEACHERS = ("planner", *RULE_TEACHERS)
#: ``fold_in`` index of the key of the ``teacher_games`` (beyond any iteration's).
TEACHER_GAMES_STREAM = 2**31 - 1


def check(args: Args) -> None:
    """Refuse bad settings before anything is compiled."""
    for name in ("iterations", "games", "epochs", "minibatch", "candidates", "horizon",
                 "eval_episodes"):  # fmt: skip
        require(getattr(args, name) >= 1, name, getattr(args, name), "must be >= 1")
    require(args.teacher_games >= 0, "teacher_games", args.teacher_games, "must be >= 0")
    require(args.lr > 0, "lr", args.lr, "must be > 0")
    require(args.departure_weight > 0, "departure_weight", args.departure_weight, "must be > 0")
    choices = f"choose one of: {', '.join(TEACHERS)}"
    require(args.teacher in TEACHERS, "teacher", args.teacher, choices)


def student_config(args: Args) -> TrainConfig:
    """The Battle config of the student: the default's learner and rewards with ``args``' view,
    neighbour-edge radius, width and seed (its network is what the run directory saves)."""
    return make_config("battle", view_radius=args.view_radius, graph_radius=args.graph_radius,
                       width=args.width, seed=args.seed)  # fmt: skip


def make_teacher(env, env_params, args: Args):
    """``args.teacher``'s team-0 labels: ``teacher(key, state) -> int32[N]``."""
    if args.teacher == "planner":
        return planner(env, env_params, args.candidates, args.horizon)
    return reference_policy(env, args.teacher)


def labelled_games(trainer: Trainer, teacher, games: int, planner_plays: bool):
    """``play(params, key) -> Labelled`` of ``games`` games: team 0 moved by the teacher
    (``planner_plays``) or by the student's ensembled policy, team 1 by the scripted rule; every
    state labelled with the teacher's team-0 actions (jitted)."""
    env, env_params, actor = trainer.env, trainer.env_params, trainer.actor
    team0 = jnp.asarray(env.teams) == 0
    scripted = make_controller("scripted", env)
    step = jax.vmap(env.step_no_reset, in_axes=(0, 0, 0, None))

    def play(params, key):
        reset_key, steps_key = jax.random.split(key)
        obs, states = env.batch_reset(jax.random.split(reset_key, games), env_params)

        def body(carry, key):
            obs, states, live = carry
            label_key, act_key, other_key, step_key = jax.random.split(key, 4)
            labels = jax.vmap(teacher)(jax.random.split(label_key, games), states)
            if planner_plays:
                other = jax.vmap(scripted, in_axes=(0, 0, None))(
                    jax.random.split(other_key, games), states, None
                )
                actions = jnp.where(team0, labels, other)
            else:
                actions, _ = actor.act((params,), act_key, obs.features, states)
            weight = obs.alive & team0 & live[:, None]
            record = Labelled(obs.features, states.grid, labels, weight)
            obs, states, _, terminated, truncated, _ = step(
                jax.random.split(step_key, games), states, actions, env_params
            )
            return (obs, states, live & ~(terminated | truncated)), record

        start = (obs, states, jnp.ones(games, bool))
        steps = jax.random.split(steps_key, env.config.max_steps)
        _, records = jax.lax.scan(body, start, steps)
        return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), records)

    return jax.jit(play)


def node_outputs(trainer: Trainer, params, data: Labelled):
    """The student on team 0's ego-graphs of ``data`` -> ``(logits float32[M, B, 5], labels
    int32[M, B], weight float32[M, B], agent int32[M, B])``: each node's logits, its agent's
    planner label, its weight (alive team-0 agent, times the centres its ego-graph stands for)
    and its agent."""
    graphs, _ = trainer.actor.build_graphs(data.grids, 0)
    logits = trainer.heads.logits(params, data.features, graphs)
    agent = graphs.nodes["agent"]
    labels = per_node(data.labels, agent)
    weight = per_node(data.weight, agent) * graphs.nodes["copies"].astype(jnp.float32)
    return logits, labels, weight, agent


def imitation_loss(trainer: Trainer, params, data: Labelled, departure_weight: float = 1.0):
    """Cross-entropy of the student's node logits against the teacher's labels over the nodes
    of alive team-0 agents (each ego-graph counted once per centre it stands for; a node whose
    label departs from ``pack``'s action counted ``departure_weight`` times) -> ``(loss,
    agreement)``: ``agreement`` is the share of nodes whose argmax is the label (each node
    counted once per centre)."""
    logits, labels, weight, agent = node_outputs(trainer, params, data)
    log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
    agreement = jnp.sum(weight * (jnp.argmax(logits, -1) == labels)) / jnp.maximum(
        jnp.sum(weight), 1.0
    )
    if departure_weight != 1.0:
        weight = weight * jnp.where(
            labels != pack_labels(trainer, data, agent), departure_weight, 1
        )
    return -jnp.sum(weight * log_prob) / jnp.maximum(jnp.sum(weight), 1.0), agreement


def pack_labels(trainer: Trainer, data: Labelled, agent: jax.Array) -> jax.Array:
    """``pack``'s action of each node's agent in ``data``'s states -> ``int32[M, B]``."""
    return per_node(jax.vmap(lambda grid: pack_actions(trainer.env, grid))(data.grids), agent)


@functools.partial(jax.jit, static_argnums=0)
def agreement_counts(trainer: Trainer, params, batch: Labelled) -> jax.Array:
    """``[labelled nodes, agreeing nodes, departures from pack, agreeing departures]`` of one
    minibatch (compiled once per trainer and minibatch shape)."""
    logits, labels, weight, agent = node_outputs(trainer, params, batch)
    base = pack_labels(trainer, batch, agent)
    agree = weight * (jnp.argmax(logits, -1) == labels)
    departed = labels != base
    return jnp.stack([jnp.sum(weight), jnp.sum(agree), jnp.sum(weight * departed),
                      jnp.sum(agree * departed)])  # fmt: skip


def label_agreement(trainer: Trainer, params, data: Labelled, minibatch: int) -> dict:
    """The student's agreement with the teacher's labels of ``data`` (states it was fitted on, or
    not), overall and on the teacher's departures from its base ``pack`` (the agent-steps where
    planning changed the action: what a student must learn beyond the convention) -> ``{"all",
    "departures", "departure_share"}`` (nodes of alive team-0 agents, each ego-graph once per
    centre)."""
    total = np.zeros(4)
    for start in range(0, data.labels.shape[0], minibatch):
        piece = jax.tree.map(lambda x, start=start: x[start : start + minibatch], data)
        total += np.asarray(agreement_counts(trainer, params, piece))
    nodes, agree, departures, agree_departed = (float(v) for v in total)
    return {"all": agree / max(nodes, 1.0), "departures": agree_departed / max(departures, 1.0),
            "departure_share": departures / max(nodes, 1.0)}  # fmt: skip


def describe(agreement: dict) -> str:
    """``label_agreement``'s numbers in words."""
    return (f"{agreement['all']:.3f}, on the {agreement['departure_share']:.3f} departures from "
            f"pack {agreement['departures']:.3f}")  # fmt: skip


def fit(trainer: Trainer, tx, params, opt_state, data: Labelled, args: Args, key):
    """``args.epochs`` shuffled passes of minibatch Adam on ``data`` (``size // minibatch``
    minibatches each, the rest of a pass left out), all in one jitted scan -> ``(params,
    opt_state, mean agreement of the last pass)``."""
    size = data.labels.shape[0]
    minibatch = min(args.minibatch, size)
    steps = size // minibatch

    @jax.jit
    def all_epochs(params, opt_state, data, key):  # data as an argument: no baked-in constants
        def step(carry, index):
            params, opt_state = carry
            batch = jax.tree.map(lambda x: x[index], data)
            loss = functools.partial(imitation_loss, departure_weight=args.departure_weight)
            grad = jax.grad(lambda p: loss(trainer, p, batch), has_aux=True)
            grads, agreement = grad(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), agreement

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, size)[: steps * minibatch]
            return jax.lax.scan(step, carry, order.reshape(steps, minibatch))

        carry, agreement = jax.lax.scan(
            epoch, (params, opt_state), jax.random.split(key, args.epochs)
        )
        return carry, agreement[-1].mean()

    (params, opt_state), agreement = all_epochs(params, opt_state, data, key)
    return params, opt_state, float(agreement)


def save_student(trainer: Trainer, params, run_dir: str) -> None:
    """Write ``params`` as a run directory at batch 0: ``trainer.config`` and a checkpoint whose
    team 0 has the student's parameters, a fresh optimiser and a fresh plateau schedule (what
    ``experiments.train --resume`` continues from and ``--init-from`` starts from)."""
    runner = trainer.init(jax.random.PRNGKey(trainer.config.seed))
    team = runner.teams[0].replace(params=params, opt_state=trainer.tx.init(params))
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_config(Path(run_dir), trainer.config)
    checkpointer = Checkpointer(Path(run_dir))
    checkpointer.save(0, runner.replace(teams=(team,)))
    checkpointer.close()


def main(args: Args) -> dict:
    check(args)
    config = student_config(args)
    trainer = Trainer(config)
    teacher = make_teacher(trainer.env, trainer.env_params, args)
    key = jax.random.PRNGKey(args.seed)
    init_key, key = jax.random.split(key)
    params = trainer.init(init_key).teams[0].params
    tx = optax.adam(args.lr)
    opt_state = tx.init(params)
    evaluator = Evaluator(evaluation_config(config, min(args.eval_episodes, 500)))
    play = {who: labelled_games(trainer, teacher, args.games, who) for who in (True, False)}
    unseen = None
    if args.teacher_games:
        play_unseen = labelled_games(trainer, teacher, args.teacher_games, True)
        unseen = play_unseen(params, jax.random.fold_in(key, TEACHER_GAMES_STREAM))
    data, rows = None, []
    for iteration in range(args.iterations):
        play_key, fit_key, key = jax.random.split(jax.random.fold_in(key, iteration), 3)
        fresh = play[iteration == 0](params, play_key)
        held_out = label_agreement(trainer, params, fresh, args.minibatch)
        data = fresh if data is None else jax.tree.map(
            lambda a, b: jnp.concatenate([a, b]), data, fresh
        )  # fmt: skip
        params, opt_state, agreement = fit(trainer, tx, params, opt_state, data, args, fit_key)
        fitted = label_agreement(trainer, params, data, args.minibatch)
        result = evaluator((params,), args.eval_episodes, seed=args.seed + 1000)["metrics"]
        row = {"iteration": iteration, "states": int(data.labels.shape[0]),
               "agreement": agreement, "held_out_agreement": held_out,
               "fitted_agreement": fitted,
               **{k: result[k] for k in ("win", "draw", "loss", "terminal_reward")}}  # fmt: skip
        reward = result["terminal_reward"]
        print(f"iteration {iteration}: {row['states']} states, agreement {agreement:.3f} "
              f"(before fitting, on the new states: {describe(held_out)}; after, on the fitted "
              f"states: {describe(fitted)}), "
              f"win {result['win']['mean']:.3f}, terminal reward x100 {reward['mean']:.1f} "
              f"[{reward['low']:.1f}, {reward['high']:.1f}]", flush=True)  # fmt: skip
        if unseen is not None:
            row["teacher_games_agreement"] = label_agreement(trainer, params, unseen,
                                                             args.minibatch)  # fmt: skip
            print(f"  on the teacher's unseen games: {describe(row['teacher_games_agreement'])}",
                  flush=True)  # fmt: skip
        rows.append(row)
    if args.run_dir:
        save_student(trainer, params, args.run_dir)
    out = {**{k: v for k, v in dataclasses.asdict(args).items() if k != "json"},
           "iterations_run": rows, **machine()}  # fmt: skip
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main(tyro.cli(Args))
