"""``make_train(config) -> train(key)``: the whole learner as one pure jitted program.

One *batch* = ``games_per_batch`` whole episodes collected from a reset (``rollout.collect``),
then one update per learning team (PPO: epochs x minibatches) from its loss in ``algos``. Batches
are scanned inside jit; the host loop (``qmarl_jax.run``) only runs chunks of
``batches_per_chunk`` batches and does the I/O between them.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh

import envs
from qmarl_jax import graph, nmp, sharding
from qmarl_jax import metrics as metrics_lib
from qmarl_jax.algos import common, qmarl_ac, qmarl_pg, qmarl_ppo
from qmarl_jax.config import TrainConfig
from qmarl_jax.rollout import Actor, collect, credit_fallen, team_batch

LOSSES = {"ac": qmarl_ac.loss, "pg": qmarl_pg.loss}


@struct.dataclass
class Plateau:
    """Learning-rate decay on a plateau of the team's return (the paper's schedule).

    Attributes:
      best: float32[] best batch return so far.
      bad_batches: int32[] batches since the last improvement.
      scale: float32[] current learning-rate multiplier.
    """

    best: jax.Array
    bad_batches: jax.Array
    scale: jax.Array

    @classmethod
    def start(cls) -> Plateau:
        return cls(jnp.float32(-jnp.inf), jnp.int32(0), jnp.float32(1.0))

    def observe(self, value: jax.Array, decay: float, patience: int) -> Plateau:
        improved = value > self.best
        bad = jnp.where(improved, 0, self.bad_batches + 1)
        decay_now = bad >= patience
        return Plateau(
            best=jnp.maximum(self.best, value),
            bad_batches=jnp.where(decay_now, 0, bad),
            scale=jnp.where(decay_now, self.scale * decay, self.scale),
        )


class KLScaleState(NamedTuple):
    """State of ``scale_by_kl``: ``kl_scale float32[]`` the learning-rate multiplier."""

    kl_scale: jax.Array


def scale_by_kl(desired_kl: float, lr: float) -> optax.GradientTransformationExtraArgs:
    """rsl_rl's adaptive learning rate as an optax transform: updates are multiplied by a scale
    that, before each step, is divided by 1.5 when the step's ``kl`` (an extra argument of
    ``update``: the minibatch's KL divergence from the acting policy) exceeds ``2 x desired_kl``
    and multiplied by 1.5 when it is under half of it, the learning rate ``lr x scale`` kept in
    [1e-5, max(1e-2, lr)]. Without ``kl`` the scale is applied unchanged."""

    def init(params):
        del params
        return KLScaleState(jnp.float32(1.0))

    def update(updates, state, params=None, *, kl=None, **extra):
        del params, extra
        scale = state.kl_scale
        if kl is not None:
            scale = jnp.where(kl > 2 * desired_kl, scale / 1.5,
                              jnp.where(kl < desired_kl / 2, scale * 1.5, scale))  # fmt: skip
            scale = jnp.clip(scale, 1e-5 / lr, max(1e-2 / lr, 1.0))
        return jax.tree.map(lambda u: u * scale, updates), KLScaleState(scale)

    return optax.GradientTransformationExtraArgs(init, update)


class BatchSchedule(NamedTuple):
    """What the run's schedules give one batch's updates.

    Attributes:
      lr_scale: float32[] learning-rate factor (``lr_anneal``; the plateau factor is per team).
      entropy_coef: float32[] entropy bonus weight (``entropy_final``).
      train_policy: bool[] False during ``critic_warmup``: only the critic learns.
      kickstart_coef: float32[] weight of the teacher's cross-entropy (``kickstart``).
    """

    lr_scale: jax.Array
    entropy_coef: jax.Array
    train_policy: jax.Array
    kickstart_coef: jax.Array


@struct.dataclass
class TeamState:
    """Parameters and optimiser of one learning team."""

    params: dict
    opt_state: optax.OptState
    plateau: Plateau


@struct.dataclass
class RunnerState:
    """Everything a run carries between batches (checkpointed between chunks).

    Attributes:
      teams: tuple of TeamState, one per learning team.
      key: uint32[2] raw PRNG key.
      batch: int32[] batches done.
      halted: bool[] a non-finite loss was met; later updates are skipped.
    """

    teams: tuple
    key: jax.Array
    batch: jax.Array
    halted: jax.Array


def update_chunks(config: TrainConfig, backend: str) -> int:
    """Time chunks of the gradient step: ``config.update_chunks``, or for 0 (auto) one per step
    on CPU and one for the whole batch on an accelerator (always 1 for losses without chunks)."""
    if config.loss_kind != "ac":
        return 1
    if config.update_chunks:
        return config.update_chunks
    return config.env_config.max_steps if backend == "cpu" else 1


class Trainer:
    """Builds the pure functions of a run from its config (nothing is compiled here)."""

    def __init__(self, config: TrainConfig, mesh: Mesh | None = None):
        self.config = config
        self.mesh = mesh if mesh is not None else sharding.make_mesh(config.num_devices)
        sharding.check_divisible(config.games_per_batch, self.mesh)
        self.env = envs.make_env(config.env_config)
        self.env_params = self.env.default_params()
        self.model = nmp.ActorCritic(
            width=config.width,
            num_blocks=config.num_blocks,
            n_rbf=config.n_rbf,
            d_max=math.sqrt(2) * self.env.config.graph_radius,
            trunk=config.trunk,
            heads=config.heads,
            max_degree=self.env.max_degree,
            q_head=config.q_head,
            critic_input=config.critic_input,
        )
        self.heads = common.Heads(self.model)
        self.actor = Actor(config, self.env, self.heads)
        clip = [optax.clip_by_global_norm(config.max_grad_norm)] if config.max_grad_norm else []
        policy_scale = (
            [optax.masked(optax.scale(config.actor_lr_scale), nmp.policy_mask)]
            if config.actor_lr_scale != 1
            else []
        )
        adaptive = [scale_by_kl(config.desired_kl, config.lr)] if config.desired_kl else []
        self.tx = optax.chain(*clip, optax.adam(config.lr), *adaptive, *policy_scale)
        self.teams = np.asarray(self.env.teams)
        self.update_chunks = update_chunks(config, jax.default_backend())
        self._init_params = jax.jit(self.init_params, static_argnums=1)  # compiled once per team

    # ---- initialisation ------------------------------------------------------------------
    def init_params(self, key: jax.Array, team: int) -> dict:
        obs, state = self.env.reset(key, self.env_params)
        grids = jax.tree.map(lambda x: x[None], state.grid)
        graphs, _ = self.actor.build_graphs(grids, team)
        graphs = jax.tree.map(lambda x: x[0], graphs)
        actions = jnp.zeros(self.env.num_agents, jnp.int32)
        return self.model.init(key, obs.features, graphs, actions)

    def init(self, key: jax.Array) -> RunnerState:
        """Fresh parameters and optimiser state for every learning team."""
        keys = jax.random.split(key, len(self.config.learning_teams) + 1)
        teams = []
        for team_key, team in zip(keys[1:], self.config.learning_teams, strict=True):
            params = self._init_params(team_key, team)
            teams.append(TeamState(params, self.tx.init(params), Plateau.start()))
        return RunnerState(tuple(teams), keys[0], jnp.int32(0), jnp.bool_(False))

    # ---- one batch -----------------------------------------------------------------------
    def _apply(self, team: TeamState, grads, schedule: BatchSchedule, **extra) -> TeamState:
        grads = self.gate_policy(grads, schedule.train_policy)
        updates, opt_state = self.tx.update(grads, team.opt_state, team.params, **extra)
        updates = jax.tree.map(lambda u: u * team.plateau.scale * schedule.lr_scale, updates)
        return team.replace(params=optax.apply_updates(team.params, updates), opt_state=opt_state)

    def gate_policy(self, grads, train_policy: jax.Array):
        """``grads`` with the policy's leaves (``nmp.policy_mask``) zeroed unless
        ``train_policy`` (bool[]): during ``critic_warmup`` only the critic learns. A zero
        gradient leaves Adam's moments at zero, so the policy does not move at all."""
        if not self.config.critic_warmup:
            return grads
        mask = nmp.policy_mask(grads)
        return jax.tree.map(lambda g, p: jnp.where(p & ~train_policy, 0.0, g), grads, mask)

    def _gradient_step(self, team: TeamState, batch: common.TeamBatch, schedule: BatchSchedule):
        cfg = self.config
        coefs = (schedule.entropy_coef, schedule.kickstart_coef)
        if self.update_chunks == 1:
            gradient = jax.value_and_grad(LOSSES[cfg.loss_kind], has_aux=True)
            on_batch = lambda small: gradient(team.params, self.heads, small, cfg, *coefs)
            (loss, aux), grads = common.on_trimmed_batch(self.actor.ladder, batch, on_batch)
        else:
            (loss, aux), grads = self._chunked_gradient(team.params, batch, *coefs)
        return self._apply(team, grads, schedule), {"total_loss": loss, **aux}

    def _gradient_steps(self, team: TeamState, batch: common.TeamBatch, schedule: BatchSchedule):
        """``config.ac_steps`` gradient steps on one batch (more than one only for qmarl_ac /
        mha), each recomputing the loss from the current parameters; the losses logged are
        their mean."""
        steps = self.config.ac_steps
        if steps == 1:
            return self._gradient_step(team, batch, schedule)
        step = lambda team, _: self._gradient_step(team, batch, schedule)
        team, logs = jax.lax.scan(step, team, None, length=steps)
        return team, jax.tree.map(jnp.mean, logs)

    def chunk_gradient(
        self,
        params,
        chunk: common.TeamBatch,
        counts,
        following,
        entropy_coef=None,
        kickstart_coef=None,
    ):
        """``((loss, (metrics, (first_value, first_return))), grads)`` of
        ``qmarl_ac.chunk_loss`` on one time chunk (``counts``: the whole batch's ``LossCounts``;
        ``following``: ``(next_value, next_return)``, float32[E, N] each; ``entropy_coef``,
        ``kickstart_coef``: the batch's entropy bonus and kickstarting weight, None: the
        config's), computed on the smallest budget size that holds the chunk
        (``config.budget_buckets``)."""
        coefs = (entropy_coef, kickstart_coef)

        def on_size(small):
            return self.sized_chunk_gradient(params, small, counts, following, *coefs)

        return common.on_trimmed_batch(self.actor.ladder, chunk, on_size)

    def sized_chunk_gradient(
        self,
        params,
        chunk: common.TeamBatch,
        counts,
        following,
        entropy_coef=None,
        kickstart_coef=None,
    ):
        """``chunk_gradient`` on the chunk's budget size as given (no size switch)."""
        return jax.value_and_grad(qmarl_ac.chunk_loss, has_aux=True)(
            params, self.heads, chunk, self.config, counts, *following, entropy_coef, kickstart_coef
        )

    def _chunked_gradient(
        self, params, batch: common.TeamBatch, entropy_coef=None, kickstart_coef=None
    ):
        """The qmarl_ac loss and gradient as a sum over ``update_chunks`` time chunks: the same
        numbers as in one piece, with the activations of one chunk alive at a time. The chunks
        run last first, each handing the value and return of its first step to the one before
        it."""
        counts = common.loss_counts(batch)
        chunks = common.time_chunks(batch, self.update_chunks)

        def gradient(chunk, following):
            return self.chunk_gradient(
                params, chunk, counts, following, entropy_coef, kickstart_coef
            )

        def add_chunk(carry, chunk):
            total, following = carry
            (loss, (metrics, first)), grads = gradient(chunk, following)
            total = jax.tree.map(jnp.add, total, ((loss, metrics), grads))
            return (total, first), None

        next_value = qmarl_ac.final_value(params, self.heads, batch)
        following = (next_value, next_value)
        shapes = jax.eval_shape(gradient, jax.tree.map(lambda x: x[0], chunks), following)
        (loss, (metrics, _)), grads = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        (total, _), _ = jax.lax.scan(
            add_chunk, (((loss, metrics), grads), following), chunks, reverse=True
        )
        return total

    def _ppo_steps(
        self,
        team: TeamState,
        batch: common.TeamBatch,
        key: jax.Array,
        schedule: BatchSchedule,
    ):
        cfg = self.config
        samples = qmarl_ppo.prepare(team.params, self.heads, batch, cfg)
        num_samples = samples.features.shape[0]
        minibatch = max(1, num_samples // cfg.num_minibatches)
        num_minibatches = num_samples // minibatch

        def epoch(carry, key):
            order = jax.random.permutation(key, num_samples)[: num_minibatches * minibatch]
            shuffled = jax.tree.map(
                lambda x: x[order].reshape(num_minibatches, minibatch, *x.shape[1:]), samples
            )

            def step(carry, mb):
                team, stopped = carry
                (loss, aux), grads = self.ppo_gradient(
                    team.params, mb, schedule.entropy_coef, schedule.kickstart_coef
                )
                extra = {"kl": aux["kl"]} if cfg.desired_kl is not None else {}
                stepped = self._apply(team, grads, schedule, **extra)
                if cfg.target_kl is not None:  # measured before this step, as SB3 does
                    stopped |= aux["kl"] > 1.5 * cfg.target_kl
                    stepped = jax.tree.map(partial(jnp.where, stopped), team, stepped)
                team = stepped
                logs = {"total_loss": loss, **aux, "ppo_updates": (~stopped).astype(jnp.float32)}
                return (team, stopped), logs

            return jax.lax.scan(step, carry, shuffled)

        keys = jax.random.split(key, cfg.ppo_epochs)
        (team, _), logs = jax.lax.scan(epoch, (team, jnp.bool_(False)), keys)
        return team, jax.tree.map(jnp.mean, logs)

    def ppo_gradient(
        self, params, samples: qmarl_ppo.PPOSamples, entropy_coef=None, kickstart_coef=None
    ):
        """``((loss, aux), grads)`` of ``qmarl_ppo.loss`` on a minibatch of samples (with the
        batch's entropy bonus ``entropy_coef`` and kickstarting weight ``kickstart_coef``, None:
        the config's), computed on the smallest budget size that holds all of its ego-graphs
        (``config.budget_buckets``)."""

        def on_graphs(graphs):
            small = qmarl_ppo.with_graphs(samples, graphs)
            return jax.value_and_grad(qmarl_ppo.loss, has_aux=True)(
                params, self.heads, small, self.config, entropy_coef, kickstart_coef
            )

        return graph.on_trimmed_graphs(
            self.actor.ladder, samples.graphs, self.env.num_agents, on_graphs
        )

    def anneal_scale(self, batch: jax.Array) -> jax.Array:
        """Learning-rate factor of batch ``batch``: linear from 1 to 0 over the run when
        ``lr_anneal``, else 1 (it multiplies the plateau factor)."""
        if not self.config.lr_anneal:
            return jnp.float32(1.0)
        return 1.0 - batch.astype(jnp.float32) / self.config.num_batches

    def kl_scale(self, team: TeamState) -> jax.Array:
        """The team's adaptive learning-rate factor (``desired_kl``; 1 when off)."""
        if self.config.desired_kl is None:
            return jnp.float32(1.0)
        return next(s for s in team.opt_state if isinstance(s, KLScaleState)).kl_scale

    def entropy_coef(self, batch: jax.Array) -> jax.Array:
        """Entropy bonus weight of batch ``batch``: ``entropy_coef``, or with ``entropy_final``
        linear from it at batch 0 to ``entropy_final`` at the last batch."""
        cfg = self.config
        if cfg.entropy_final is None:
            return jnp.float32(cfg.entropy_coef)
        progress = batch.astype(jnp.float32) / max(cfg.num_batches - 1, 1)
        progress = jnp.minimum(progress, 1.0)
        return cfg.entropy_coef + (cfg.entropy_final - cfg.entropy_coef) * progress

    def kickstart_coef(self, batch: jax.Array) -> jax.Array:
        """Kickstarting weight of batch ``batch``: linear from ``kickstart_coef`` at batch 0 to
        0 at batch ``kickstart_batches`` (the run's length when None), 0 after it."""
        cfg = self.config
        span = cfg.kickstart_batches or cfg.num_batches
        progress = jnp.minimum(batch.astype(jnp.float32) / span, 1.0)
        return jnp.float32(cfg.kickstart_coef) * (1.0 - progress)

    def update(self, runner: RunnerState) -> tuple[RunnerState, dict]:
        """Collect one batch of episodes and update every learning team."""
        cfg = self.config
        key, collect_key, update_key = jax.random.split(runner.key, 3)
        params = tuple(t.params for t in runner.teams)
        traj = collect(self.actor, params, collect_key, self.env_params,
                       place=lambda games: sharding.shard_games(games, self.mesh))  # fmt: skip
        logs = metrics_lib.episode_metrics(
            cfg.scenario, traj, self.teams, evaluated_team=cfg.learning_teams[0]
        )
        reward = credit_fallen(traj, self.teams, cfg.gamma) if cfg.credit_fallen else traj.reward
        new_teams = []
        finite = jnp.bool_(True)
        schedule = BatchSchedule(
            lr_scale=self.anneal_scale(runner.batch),
            entropy_coef=self.entropy_coef(runner.batch),
            train_policy=runner.batch >= cfg.critic_warmup,
            kickstart_coef=self.kickstart_coef(runner.batch),
        )
        for index, (team_state, team) in enumerate(
            zip(runner.teams, cfg.learning_teams, strict=True)
        ):
            batch = team_batch(traj, index, team, self.teams, reward)
            if cfg.loss_kind == "ppo":
                updated, losses = self._ppo_steps(team_state, batch, update_key, schedule)
            else:
                updated, losses = self._gradient_steps(team_state, batch, schedule)
            finite &= jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in losses.values()]))
            plateau = team_state.plateau.observe(
                logs[f"return/team{team}"], cfg.lr_decay, cfg.lr_patience
            )
            new_teams.append(updated.replace(plateau=plateau))
            prefix = "" if index == 0 else f"team{team}/"
            logs.update({f"{prefix}{k}": v for k, v in losses.items()})
            logs[f"{prefix}lr"] = (
                cfg.lr * plateau.scale * schedule.lr_scale * self.kl_scale(updated)
            )
        logs["entropy_coef"] = schedule.entropy_coef
        if cfg.kickstart:
            logs["kickstart_coef"] = schedule.kickstart_coef
        halted = runner.halted | ~finite
        # A non-finite loss keeps the last good parameters and stops every later update.
        teams = jax.tree.map(
            lambda new, old: jnp.where(halted, old, new), tuple(new_teams), runner.teams
        )
        logs["nonfinite"] = (~finite).astype(jnp.float32)
        next_runner = RunnerState(teams, key, runner.batch + (~halted).astype(jnp.int32), halted)
        return next_runner, logs

    def run_batches(self, runner: RunnerState, num_batches: int) -> tuple[RunnerState, dict]:
        """``num_batches`` batches in one ``lax.scan`` -> (runner, metrics with leading axis)."""
        return jax.lax.scan(lambda r, _: self.update(r), runner, None, length=num_batches)

    def train(self, key: jax.Array) -> tuple[RunnerState, dict]:
        """The whole run from a key: ``init`` then every batch (pure; jit it)."""
        return self.run_batches(self.init(key), self.config.num_batches)


def make_train(config: TrainConfig):
    """``train(key) -> (RunnerState, metrics [num_batches])``, jitted (PureJaxRL style)."""
    return jax.jit(Trainer(config).train)
