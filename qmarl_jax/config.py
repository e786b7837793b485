"""Training configuration: one frozen dataclass, presets by name, validation before any compile.

Every **(ours)** choice of SPEC.md is a field here with its default documented. Presets:

* ``default`` — CPU-sized settings per scenario that train a clearly better-than-random policy in
  minutes on a 2-core CPU (``make train``).
* ``paper`` — the paper's settings: Adam, lr 0.01, lr x0.95 after 10 batches without improvement,
  100 games per batch, 120 batches, gamma 0.99.
* per scenario, the strongest measured recipes: ``coordinated`` (Deception), ``wide_view``,
  ``wide_view_ac``, ``wide_view_kickstart``, ``wide_view_ac_kickstart`` and
  ``wide_view_ac_finetune`` (Jungle), ``kickstart`` and ``kickstart_finetune`` (Battle).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import envs
from envs.base import require
from envs.opponents import CONTROLLERS, TEACHERS_ONLY, scenario_controllers
from qmarl_jax.ensemble import MODES
from qmarl_jax.nmp import CRITIC_INPUTS, Q_HEADS

ALGOS = ("qmarl_ac", "qmarl_pg", "qmarl_ppo", "vanilla_pg", "mha")
AC_ESTIMATORS = ("sampled", "all_actions")
#: Environment overrides every scenario takes (None keeps the preset's value).
ENV_FIELDS = ("max_steps", "view_radius", "graph_radius")
#: Environment overrides that only some scenarios have -> those scenarios.
SCENARIO_FIELDS = {
    "shaping": ("battle", "deception"),
    "kill_credit": ("battle",),
    "landmark_sight": ("deception",),
    "observe_time": ("battle", "deception"),
}
LEARN = "learn"
TEAM_CONTROLLERS = (LEARN, *CONTROLLERS)
#: Controllers that can teach a learner (``TrainConfig.kickstart``).
TEACHERS = (*(k for k in CONTROLLERS if k != "random"), *TEACHERS_ONLY)
#: The teams a ``TEACHERS_ONLY`` teacher needs: it plans team 0 against the scripted team.
TEACHER_ONLY_CONTROLLERS = (LEARN, "scripted")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    # --- environment ---
    scenario: str = "battle"
    """Scenario: jungle, battle or deception."""
    env_preset: str = "tiny"
    """Environment preset (tiny, n100, n1k, n10k)."""
    num_agents: int | None = None
    """Resize the environment to about this many agents at the nearest preset's density."""
    density: float | None = None
    """With ``num_agents``: agents per cell of the resized grid (default: the preset's)."""
    max_steps: int | None = None
    """Override the episode length."""
    view_radius: int | None = None
    """Override the observation window radius r (a (2r+1)^2 window; the SPEC's default is 1)."""
    graph_radius: int | None = None
    """Override the neighbour-graph edge radius (Chebyshev; the env's default is 1)."""
    shaping: float | None = None
    """Override the dense shaping weight of Battle (kills) or Deception (potential-based, of the
    home payoff); the envs' default is 0: the sparse terminal reward."""
    kill_credit: float | None = None
    """Battle only: pay each agent this for every enemy that dies beside it (distance 1, after the
    move) and minus this on its own death (the env's default 0 = off; the reported metric stays
    the terminal reward)."""
    landmark_sight: int | None = None
    """Deception only: radius of the landmark compass (the env's default 0 = off: the SPEC's
    window alone; ``DeceptionConfig.landmark_sight``)."""
    observe_time: bool | None = None
    """Battle and Deception: also observe the fraction of the episode left (env default False;
    both decide their payoff on the last step)."""
    controllers: tuple[str, ...] = ("learn", "scripted")
    """Controller of each team in team order: learn, random, scripted, or Battle's pack or strike
    (``envs.opponents``; extra entries ignored; Jungle has one team, Battle and Deception two:
    Deception's team 0 is home, 1 adversaries)."""

    # --- algorithm ---
    algo: str = "qmarl_ac"
    """qmarl_ac (TD(0) actor-critic, counterfactual baseline), qmarl_pg (REINFORCE), qmarl_ppo
    (PPO + GAE), vanilla_pg (independent MLP on the local observation, REINFORCE) or mha (the
    DGN-style attention baseline on the whole neighbour graph, trained by the qmarl_ac loss)."""
    games_per_batch: int = 100
    """Episodes played in parallel per batch (one update per batch, PPO: several epochs)."""
    num_batches: int = 120
    """Batches (updates) in the run."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda (qmarl_ppo)."""
    clip_eps: float = 0.2
    """PPO clip range."""
    dual_clip: float = 3.0
    """Dual-clip PPO bound c (Ye et al. 2020): a negative-advantage node's objective is at least
    ``c * advantage``. A node's label is the ensemble's action, which the node's own policy may
    give a tiny probability, so its ratio can explode; 0 = off (plain PPO). Must be > 1 or 0."""
    ac_estimator: str = "sampled"
    """qmarl_ac / mha actor gradient: ``sampled`` (the paper's: the counterfactual advantage of the
    executed action times the gradient of its log-probability) or ``all_actions`` (its
    expectation over the node's own policy, ``grad sum_a pi(a) (q(a) - V)``: no sampling noise,
    and independent of the label, which is the ensemble's action rather than a draw from the
    node's own policy)."""
    ac_steps: int = 1
    """qmarl_ac / mha: gradient steps per batch, each on the whole batch's loss with its TD
    targets and advantages recomputed from the current parameters (1 = the paper's one step)."""
    td_lambda: float = 0.0
    """qmarl_ac / mha: lambda of the critic's TD(lambda) target ``r_t + gamma ((1 - lambda)
    V_{t+1} + lambda G_{t+1})`` (0 = the paper's TD(0) target ``r_t + gamma V_{t+1}``; 1 =
    the Monte-Carlo return bootstrapped at the batch's end). Larger lambda carries a delayed
    outcome back to the steps that caused it in one update; on Jungle 0.8 scored worse than
    TD(0) (docs/RESULTS.md)."""
    ppo_epochs: int = 4
    """PPO epochs per batch."""
    num_minibatches: int = 4
    """PPO minibatches per epoch (over the env-steps of the batch)."""
    desired_kl: float | None = None
    """PPO adaptive learning rate (rsl_rl's, made for thousands of parallel robots): after each
    minibatch whose mean KL divergence of the nodes' policies from the acting ones is above 2 x
    this, the learning rate is divided by 1.5; below half of it, multiplied by 1.5 (kept in
    [1e-5, 1e-2]; ``lr`` is the start). None = off. With many agents per game the gradients are
    nearly noise-free and each Adam step moves every parameter by about the learning rate, so the
    step that suits a tiny world is far too long (docs/RESULTS.md, "Learning at scale")."""
    target_kl: float | None = None
    """PPO early stop (Stable-Baselines3's rule): a batch's epochs stop at the first minibatch
    whose mean KL divergence of the nodes' policies from the acting ones exceeds 1.5 x this;
    None = off (docs/RESULTS.md, "Learning at scale")."""
    entropy_coef: float = 0.01
    """Entropy bonus weight (at the first batch when ``entropy_final`` is set)."""
    entropy_final: float | None = None
    """Anneal the entropy bonus linearly from ``entropy_coef`` at the first batch to this at the
    last (None = constant ``entropy_coef``): explore early, sharpen late."""
    critic_coef: float = 0.5
    """Critic loss weight."""
    normalize_advantages: bool = True
    """Standardise advantages (PG returns, PPO GAE) over the batch."""
    credit_fallen: bool = True
    """Pay a team's end-of-episode outcome also to its agents that died before the end,
    discounted to their last step (Battle pays it only to survivors, so dying early escapes a
    loss: ``rollout.credit_fallen``). No effect where the env reports no outcome."""

    update_chunks: int = 0
    """qmarl_ac / mha: compute the update's gradient over this many time chunks of the batch and
    sum them (the same gradient; the activations of one chunk at a time). Must divide the episode
    length. 0 = auto: one chunk per step on CPU (measured 1.5-2x faster than one piece: the
    working set stays in cache), one piece on GPU/TPU. Other algos: 0 or 1 (qmarl_ppo bounds
    memory with num_minibatches)."""

    # --- optimiser ---
    lr: float = 0.003
    """Adam learning rate (the paper: 0.01)."""
    lr_decay: float = 0.95
    """Learning-rate factor after ``lr_patience`` batches without improvement of the return."""
    lr_patience: int = 10
    """Batches without improvement before the learning rate decays."""
    lr_anneal: bool = False
    """Also decay the learning rate linearly to 0 over ``num_batches`` (PureJaxRL's anneal_lr)."""
    actor_lr_scale: float = 1.0
    """The policy's learning rate relative to ``lr`` (the actor trunk and policy head; the critic
    keeps ``lr``). Below 1: a two-timescale actor-critic, whose critic tracks the policy faster
    than the policy changes (the condition of actor-critic convergence proofs)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip (0 = off)."""
    critic_warmup: int = 0
    """Batches at the start of the run in which only the critic learns: the policy's gradients
    (actor trunk and policy head) are zeroed, so the policy stays as it started while the
    critic learns its values. For fine-tuning a trained policy (``init_from``): an untrained
    critic's advantages are noise, and the first updates on them undo the policy."""
    kickstart: str | None = None
    """A teacher controller (``envs.opponents``: scripted, Battle's pack, strike, strike2,
    rollout or rollout_own, or Jungle's claim, informed or lookahead - rollout(_own) and
    lookahead are planners that see the whole map and play the env forward, privileged at
    training time only; rollout(_own) plans team 0 against the scripted team, so it needs
    controllers ``("learn", "scripted")``; rollout_own corrects the moves the learner just
    played rather than ``strike``'s) whose
    actions the learning teams' policies are pulled toward while they learn (kickstarting,
    Schmitt et al. 2018): the loss adds ``kickstart_coef`` x the cross-entropy of every acting
    node's policy against the teacher's action for its agent in the same state, on the states
    the learners' own policies visit (so the teacher labels the learner's mistakes, as in
    DAgger). None = off. Every learner (``algos.common.kickstart_term``)."""
    kickstart_coef: float = 1.0
    """Weight of the kickstarting cross-entropy at the first batch; it decays linearly to 0 at
    batch ``kickstart_batches``."""
    kickstart_batches: int | None = None
    """Batches over which the kickstarting weight decays to 0 (None: the whole run)."""

    # --- ego-graphs and network ---
    depth: int = 2
    """Hops of an ego-graph (ours: 2; the paper's example: 3). vanilla_pg always uses 0."""
    max_nodes: int = 16
    """Cap on nodes per ego-graph (the closest by hop, then distance, are kept)."""
    node_budget: int | None = None
    """Node slots of one env-step's ego-graphs; None: calibrated (see ``budget_margin``). Nodes
    beyond the budget are dropped and counted (``overflow_nodes``)."""
    edge_budget: int | None = None
    """Directed-edge slots of one env-step; None: calibrated. Dropped edges are counted."""
    budget_margin: float = 1.25
    """Calibrated budgets = margin x the largest total seen on random starts of 64 envs, capped
    by the worst case (which never drops anything). Training grows them when they overflow
    (``grow_budgets``)."""
    share_ego_graphs: bool = True
    """Store identical ego-graphs once (``graph.ego_graphs(share_components=True)``): when an
    ego-graph holds its agent's whole connected component, every agent of the component whose
    ego-graph does too has the same graph, and the network gives them the same outputs; it is
    stored once and weighted by its copies in the losses and the ensemble (the same numbers).
    At 4% density half of the budget's nodes are such copies. False: one graph per agent."""
    budget_buckets: int = 0
    """Budget sizes the network runs on: the full budgets halved ``budget_buckets - 1`` times.
    Each acting step and each update chunk runs on the smallest size that holds its real
    ego-graphs (``lax.switch``; only padding is cut, so the numbers are the same): budgets are
    sized for the fullest step, and the steps after deaths and dispersal use a fraction of
    them. 1 = always the full budgets. 0 = auto: up to 8 on CPU (sizes under 64 node slots
    left out); on GPU/TPU up to 4 with ``update_chunks > 1``, else 1; 1 for ``mha``. Under a
    vmap of whole runs a batched switch runs every size, unless traced in
    ``graph.one_size_across``, as seed sets (``loop.train_seed_set``) and
    ``experiments.reproduce.train_seeds`` are: their seeds share one size per switch."""
    grow_budgets: bool = True
    """Training loop: when a chunk's ego-graphs overflowed a budget, raise both budgets 1.5x and
    rerun the chunk (a recompile), so training never drops a node; the grown budgets are saved
    in the run's config. False: overflowing nodes are dropped and counted."""
    width: int = 64
    """Hidden width of the message-passing network."""
    num_blocks: int = 2
    """Edge-then-vertex update blocks L."""
    n_rbf: int = 10
    """Radial basis functions on edge lengths."""
    heads: int = 4
    """Attention heads of the mha baseline (1 = the paper's SHA)."""
    q_head: str = "plain"
    """Counterfactual Q head of qmarl_ac and mha: plain (5 free outputs: only the taken action's
    value is trained, the others stay near their initialisation) or dueling (the node's state
    value plus action advantages centred on their mean, so untaken actions follow the state
    value). Measured on Jungle tiny, view 5x5, 400 batches, 3 seeds: dueling scores 14-20, plain
    10-47 (docs/RESULTS.md); plain stays the default."""
    critic_input: str = "ego"
    """What qmarl_ppo's state value reads: ego (its ego-graph, the paper's critic) or team (also
    a summary of the node's whole world at training time: each side's mean embedded observation
    and share of agents alive, ``nmp.team_summaries``; centralised training, decentralised
    acting). ``init_from`` a run with the other critic input keeps every shared parameter and
    starts the summary's layers fresh; the layer that adds the summary starts at zeros, so the
    values start as the ``ego`` run's."""
    ensemble: str = "mean_prob"
    """Action ensembling: mean_prob, mean_logit or none (own ego-graph only)."""
    ensemble_hops: int | None = None
    """Ours, an ablation: only the ego-graphs whose centre is within this many hops of an agent
    vote for its action (0 = none; None = every ego-graph holding it, the paper's rule). Needs
    ``share_ego_graphs=False`` (a shared graph counts hops from one of its centres)."""

    # --- run ---
    seed: int = 0
    """PRNG seed (same seed, same machine -> same numbers)."""
    batches_per_chunk: int = 10
    """Batches per jitted chunk; metrics, checkpoints and the progress bar update per chunk."""
    num_devices: int = 0
    """Devices the games of a batch are split over (data parallel; 0 = all visible devices).
    ``games_per_batch`` must be a multiple of it."""
    init_from: str | None = None
    """A run directory whose latest parameters start this run's learning teams (an imitation
    student from ``experiments.battle_imitation --run-dir``, or another run to fine-tune with
    other settings); the optimiser, the schedules and the batch count start fresh. Its learning
    teams and parameter shapes must match this config's. None: a fresh initialisation."""

    def __post_init__(self):
        _one_of("scenario", self.scenario, envs.SCENARIOS)
        _one_of("env_preset", self.env_preset, envs.PRESETS[self.scenario])
        _one_of("algo", self.algo, ALGOS)
        _one_of("ensemble", self.ensemble, MODES)
        _one_of("q_head", self.q_head, Q_HEADS)
        _one_of("critic_input", self.critic_input, CRITIC_INPUTS)
        _one_of("ac_estimator", self.ac_estimator, AC_ESTIMATORS)
        usable = scenario_controllers(self.scenario, TEAM_CONTROLLERS)
        for i, kind in enumerate(self.controllers):
            _one_of(f"controllers[{i}]", kind, usable)
        env_config = self.env_config  # validates the environment settings too
        teams = self.num_teams
        if len(self.controllers) < teams:
            raise ValueError(
                f"invalid config field 'controllers'={self.controllers!r}: {self.scenario} has "
                f"{teams} teams, give one controller each"
            )
        if LEARN not in self.controllers[:teams]:
            raise ValueError(
                f"invalid config field 'controllers'={self.controllers!r}: at least one team must "
                "be 'learn'"
            )
        positive = (
            "games_per_batch", "num_batches", "ppo_epochs", "num_minibatches", "width",
            "num_blocks", "n_rbf", "max_nodes", "heads", "batches_per_chunk", "lr_patience",
            "ac_steps",
        )  # fmt: skip
        for name in positive:
            require(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        require(self.num_devices >= 0, "num_devices", self.num_devices, "must be >= 0 (0 = all)")
        require(self.lr > 0, "lr", self.lr, "must be > 0")
        require(self.actor_lr_scale > 0, "actor_lr_scale", self.actor_lr_scale, "must be > 0")
        require(self.critic_warmup >= 0, "critic_warmup", self.critic_warmup, "must be >= 0")
        require(self.budget_margin >= 1, "budget_margin", self.budget_margin, "must be >= 1")
        for name in ("node_budget", "edge_budget"):
            value = getattr(self, name)
            require(value is None or value >= 1, name, value, "must be >= 1 (or None: calibrated)")
        for name in ("gamma", "gae_lambda", "lr_decay"):
            require(0 < getattr(self, name) <= 1, name, getattr(self, name), "must be in (0, 1]")
        for name in ("clip_eps", "entropy_coef", "critic_coef", "max_grad_norm"):
            require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        for name in ("target_kl", "desired_kl"):
            value = getattr(self, name)
            require(value is None or value > 0, name, value, "must be > 0 (or None: off)")
            require(value is None or self.loss_kind == "ppo", name, value,
                    f"only for algo='qmarl_ppo' (got algo={self.algo!r}); or None")  # fmt: skip
        only_ac = f"only for algo='qmarl_ac' or 'mha' (got algo={self.algo!r})"
        require(self.ac_steps == 1 or self.loss_kind == "ac", "ac_steps", self.ac_steps,
                f"{only_ac}; or 1")  # fmt: skip
        require(self.ac_estimator == "sampled" or self.loss_kind == "ac", "ac_estimator",
                self.ac_estimator, f"{only_ac}; or 'sampled'")  # fmt: skip
        require(0 <= self.td_lambda <= 1, "td_lambda", self.td_lambda, "must be in [0, 1]")
        require(self.td_lambda == 0 or self.loss_kind == "ac", "td_lambda", self.td_lambda,
                f"{only_ac}; or 0")  # fmt: skip
        require(self.critic_input == "ego" or self.loss_kind == "ppo", "critic_input",
                self.critic_input, f"only for algo='qmarl_ppo' (got algo={self.algo!r}); "
                "or 'ego'")  # fmt: skip
        require(self.entropy_final is None or self.entropy_final >= 0, "entropy_final",
                self.entropy_final, "must be >= 0 (or None: constant entropy_coef)")  # fmt: skip
        require(self.depth >= 0, "depth", self.depth, "must be >= 0")
        hops = self.ensemble_hops
        require(hops is None or hops >= 0, "ensemble_hops", hops, "must be >= 0 (or None: all)")
        require(hops is None or not self.share_ego_graphs, "ensemble_hops", hops,
                "needs share_ego_graphs=False (or None)")  # fmt: skip
        require(hops is None or self.trunk == "nmp", "ensemble_hops", hops,
                f"only for the ego-graph algos (got algo={self.algo!r}); or None")  # fmt: skip
        self._check_kickstart()
        require(self.dual_clip == 0 or self.dual_clip > 1, "dual_clip", self.dual_clip,
                "must be > 1 (or 0: off)")  # fmt: skip
        require(self.update_chunks >= 0, "update_chunks", self.update_chunks,
                "must be >= 0 (0 = auto)")  # fmt: skip
        require(self.budget_buckets >= 0, "budget_buckets", self.budget_buckets,
                "must be >= 0 (0 = auto)")  # fmt: skip
        require(
            self.update_chunks <= 1 or self.loss_kind == "ac",
            "update_chunks",
            self.update_chunks,
            f"must be 0 or 1 for algo={self.algo!r} (chunked updates: qmarl_ac and mha; "
            "qmarl_ppo bounds memory with num_minibatches)",
        )
        require(
            env_config.max_steps % max(self.update_chunks, 1) == 0,
            "update_chunks",
            self.update_chunks,
            f"must divide the episode length max_steps={env_config.max_steps}",
        )
        border = envs.make_env(env_config).spec.pad
        require(
            self.graph_depth * env_config.graph_radius <= border,
            "depth",
            self.depth,
            f"needs a grid border of depth * graph_radius = "
            f"{self.graph_depth * env_config.graph_radius} cells; the environment has {border} "
            "(raise its sight_radius)",
        )

    def _check_kickstart(self) -> None:
        if self.kickstart is not None:
            _one_of("kickstart", self.kickstart, scenario_controllers(self.scenario, TEACHERS))
        if self.kickstart in TEACHERS_ONLY and self.controllers[:2] != TEACHER_ONLY_CONTROLLERS:
            raise ValueError(
                f"invalid config field 'controllers'={self.controllers!r}: the {self.kickstart!r} "
                f"teacher plans team 0's agents against the scripted team; it needs controllers "
                f"{TEACHER_ONLY_CONTROLLERS!r}"
            )
        require(self.kickstart_coef >= 0, "kickstart_coef", self.kickstart_coef, "must be >= 0")
        value = self.kickstart_batches
        require(value is None or value >= 1, "kickstart_batches", value,
                "must be >= 1 (or None: the whole run)")  # fmt: skip

    # --- derived values (never stored) ---
    @property
    def env_config(self) -> envs.GridConfig:
        """The validated environment config."""
        overrides: dict[str, Any] = {
            field: getattr(self, field) for field in ENV_FIELDS if getattr(self, field) is not None
        }
        for field, scenarios in SCENARIO_FIELDS.items():
            value = getattr(self, field)
            if value is not None:
                names = " and ".join(name.capitalize() for name in scenarios)
                verb = "has" if len(scenarios) == 1 else "have"
                require(self.scenario in scenarios, field, value, f"only {names} {verb} one")
                overrides[field] = value
        if self.num_agents is not None:
            return envs.sized_config(self.scenario, self.num_agents, self.density, **overrides)
        require(self.density is None, "density", self.density, "needs num_agents")
        return envs.make_config(self.scenario, self.env_preset, **overrides)

    @property
    def num_teams(self) -> int:
        return envs.SCENARIOS[self.scenario][0].num_teams

    @property
    def learning_teams(self) -> tuple[int, ...]:
        """Teams whose controller is ``learn`` (each has its own parameters)."""
        return tuple(t for t in range(self.num_teams) if self.controllers[t] == LEARN)

    @property
    def graph_depth(self) -> int:
        """Ego-graph depth actually used (0 for the graph-free vanilla_pg baseline)."""
        return 0 if self.algo == "vanilla_pg" else self.depth

    @property
    def trunk(self) -> str:
        """Network trunk: ``mha`` (attention on the neighbour graph) or ``nmp`` (ego-graphs)."""
        return "mha" if self.algo == "mha" else "nmp"

    @property
    def loss_kind(self) -> str:
        """Which loss trains the policy: ac, pg or ppo."""
        kinds = {"qmarl_ac": "ac", "qmarl_pg": "pg", "qmarl_ppo": "ppo", "vanilla_pg": "pg",
                 "mha": "ac"}  # fmt: skip
        return kinds[self.algo]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_from_dict(fields: dict[str, Any], source: str = "config") -> TrainConfig:
    """A ``TrainConfig`` from its ``to_dict()`` / JSON form (lists back to tuples, validated).

    Raises:
      ValueError: a field this version does not know (``source`` names where it came from).
    """
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"{source} has fields this version does not know: {unknown}")
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _one_of(field: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(
            f"invalid config field '{field}'={value!r}; choose one of: {', '.join(allowed)}"
        )


#: CPU-sized defaults per scenario (``make train``): PPO learned fastest per CPU-second in our
#: measurements (README); Battle adds the env's optional dense shaping and per-agent kill credit
#: 0.5 (the reported metric stays the sparse terminal reward; with the credit seeds 0-2 evaluated
#: -10.2 / +8.5 / -2.3, without it -33.3 on seed 0 and -19.3 / -25.8 / -28.2 in session 9, with 1.0
#: +2.9 / +7.4 / +4.2, within the seeds' noise: docs/RESULTS.md), trains 300 batches (10 minutes on
#: session 9's CPU) with the learning rate annealed to 0 (without it a 400-batch run peaked near
#: batch 250 and fell back to stand-still level: docs/NOTEBOOK.md) and sizes its ego-graph budgets
#: 6x the random start's (the teams close in and their ego-graphs grow: 1.25x overflowed three
#: times, 4x once, each a recompile and a rerun chunk; the budget ladder keeps unused slots nearly
#: free);
#: Deception trains 400 batches (about 2 minutes; the home reward levels off near -60 by then,
#: from -86 at 120: docs/NOTEBOOK.md);
#: Jungle keeps a larger entropy bonus (at 0.01 its policy turns
#: near-deterministic after ~600 batches and agents that see the same thing collide and harm each
#: other: the score halves; at 0.03 it keeps rising, docs/NOTEBOOK.md).
_CPU = dict(algo="qmarl_ppo", games_per_batch=32, ppo_epochs=2, num_minibatches=8,
            num_batches=120)  # fmt: skip
DEFAULT_PRESETS: dict[str, dict[str, Any]] = {
    "jungle": dict(_CPU, scenario="jungle", controllers=("learn",), entropy_coef=0.03),
    "battle": dict(
        _CPU,
        scenario="battle",
        controllers=("learn", "scripted"),
        shaping=1.0,
        kill_credit=0.5,
        num_batches=300,
        lr_anneal=True,
        budget_margin=6.0,
    ),
    "deception": dict(
        _CPU,
        scenario="deception",
        controllers=("learn", "scripted"),
        num_batches=400,
        lr_anneal=True,
    ),
}

#: The paper's training settings (on top of a scenario's default).
PAPER = dict(lr=0.01, lr_decay=0.95, lr_patience=10, games_per_batch=100, num_batches=120,
             gamma=0.99, algo="qmarl_ac", shaping=None, kill_credit=None)  # fmt: skip

#: Deception's coordination options (SPEC section 8: the landmark compass, the time left and
#: potential-based shaping) at the batch size that learns them on every seed: 256 games x 1,000
#: batches evaluated +42.8 / +41.8 / +39.4 on seeds 0-2 (the paper: 35.90); 128 games left one
#: seed in three low (docs/RESULTS.md "SPEC section 8").
COORDINATED = dict(landmark_sight=4, observe_time=True, shaping=1.0, games_per_batch=256,
                   num_batches=1000)  # fmt: skip

#: Jungle's strongest recipe: a 5x5 view, 1,200 batches and entropy bonus 0.05. With the default
#: 0.03 one seed in three collapsed (every agent steps the same way and half of them die of harm:
#: 0.386 of the oracle); at 0.05 six seeds out of six evaluated 0.875-0.908 (docs/RESULTS.md).
WIDE_VIEW = dict(view_radius=2, num_batches=1200, entropy_coef=0.05)

#: The same for the paper's learner, ``qmarl_ac``: two timescales (critic 0.01, actor 0.001),
#: the all-actions actor gradient and 4 gradient steps per batch, entropy bonus 0.7. On 8 seeds
#: (an H200) the bonus raised the score step by step: 0.1 -> 0.830, 0.2 -> 0.852, 0.3 -> 0.859,
#: 0.5 -> 0.884, 0.7 -> 0.893 (every seed 0.875-0.909, survival 0.94), 1.0 -> 0.876; the one-step
#: sampled estimator gave 0.601, 4 steps of it 0.293 (docs/RESULTS.md, "qmarl_ac that learns on
#: every seed").
WIDE_VIEW_AC = dict(WIDE_VIEW, algo="qmarl_ac", entropy_coef=0.7, lr=0.01, actor_lr_scale=0.1,
                    ac_estimator="all_actions", ac_steps=4)  # fmt: skip

#: Held to Jungle's ``claim`` rule (0.958 of the oracle bound) as a teacher: the 9x9 view the
#: rule reads, graph radius 2, entropy bonus 0.01 and the kickstarting weight held near 1 for the
#: whole run (it would reach 0 at batch 100,000; decayed to 0 over the run PPO ends at 0.847).
HELD_TO_CLAIM = dict(view_radius=4, graph_radius=2, entropy_coef=0.01, kickstart="claim",
                     kickstart_batches=100_000)  # fmt: skip

#: ``wide_view`` PPO held to ``claim``. 1,200 batches, 3 vmapped seeds (session 40): 0.934 /
#: 0.942 / 0.932 (mean 0.936; 0.565 at 8 agents); at 600 batches (session 39) 0.920 / 0.924 /
#: 0.911 (mean 0.918; 0.555 at 8 agents), above every seed of ``wide_view``. RL alone after it
#: trades survival for food and ends lower (docs/RESULTS.md, "Kickstarting Jungle"). At 8
#: agents it does not carry over.
WIDE_VIEW_KICKSTART = dict(WIDE_VIEW, **HELD_TO_CLAIM)

#: The paper's learner, ``qmarl_ac`` (``wide_view_ac``), held to ``claim`` as
#: ``wide_view_kickstart`` holds PPO (entropy bonus 0.01, not 0.7). 1,200 batches, seeds 0-2
#: (session 40): 0.939 / 0.924 / 0.942 (mean 0.935; 0.563 at 8 agents), from
#: ``wide_view_ac``'s 0.880 on 3 seeds (docs/RESULTS.md, "Kickstarting Jungle"); at entropy 0.1
#: and 600 batches seed 0 reached 0.871.
WIDE_VIEW_AC_KICKSTART = dict(WIDE_VIEW_AC, **HELD_TO_CLAIM)

#: The next stage of a ``wide_view_ac_kickstart`` run (``init_from`` required): the same recipe
#: and teacher at a fresh learning rate (0.003, annealed to 0, no plateau decay) for 400
#: batches. Stage 1's plateau decay has cut the rate below 0.001 by batch 600 and to 0 by its
#: end. Run twice, 3 seeds each (session 42; docs/RESULTS.md, "Kickstarting Jungle"):
#: taught by ``claim``, from 0.939 / 0.924 / 0.942 to 0.954 / 0.945 / 0.956, mean 0.952
#: (greedy 0.949; a third time 0.951 / 0.955 / 0.954); with ``--kickstart lookahead`` in
#: every stage, from 0.930 / 0.927 / 0.927 to 0.953 / 0.948 / 0.952, mean 0.951 (greedy
#: 0.961). Both meet the issue's 0.95 for ``qmarl_ac``.
WIDE_VIEW_AC_FINETUNE = dict(WIDE_VIEW_AC_KICKSTART, lr=0.003, lr_anneal=True, lr_decay=1.0,
                             num_batches=400)  # fmt: skip

#: Battle taught from scratch in one run by ``rollout`` (+97.4), the per-agent planner over
#: ``strike`` (each agent alone plays its 5 actions 2 steps forward; privileged, a teacher
#: only): kickstarting (the policy's cross-entropy to the teacher's actions on its own states,
#: weight 1 decaying to 0 over the 600 batches) with the 7x7 view the rules read, kill credit
#: 1.0 and neighbour edges up to 2 cells (graph radius 2: an enemy two cells away, whose move
#: the rules predict, is a direct neighbour and its view reaches what decides that move).
#: docs/RESULTS.md, "Each agent's own rollouts as Battle's teacher": seeds 0-2 (sessions 43-44)
#: +77.5 / +75.1 / +72.2 (mean +74.9). Taught by ``strike2`` (+79.3; ``--kickstart strike2``,
#: the preset's teacher in sessions 40-43): +62.4 / +62.2 / +60.2 (mean +61.6; +69.9 at 28
#: agents); by ``strike`` (+71.5; ``--kickstart strike``, until session 40): mean +58.5 (+65.1
#: at 28 agents); 300 batches (session 34) mean +47.3; session 33 without graph radius 2: mean
#: +37.7; the default's 3 seeds: -1.3.
KICKSTART = dict(view_radius=3, kill_credit=1.0, kickstart="rollout", graph_radius=2,
                 num_batches=600)  # fmt: skip

#: The second stage of Battle's best recipe: RL alone, without the teacher, for 300 batches at a
#: tenth of the learning rate (annealed), from a ``kickstart`` run (``init_from``, required).
#: docs/RESULTS.md, "Each agent's own rollouts as Battle's teacher" (sessions 43-44): after the
#: ``rollout`` first stage, seeds 0-2 +81.9 / +84.8 / +78.2 (mean +81.6; +89.5 at 28 agents);
#: run a second time from its own result +86.1 / +85.9 / +78.6 (mean +83.5; +90.6 at 28
#: agents). After a ``strike2`` first stage ("RL alone after the teacher", sessions 38-40):
#: mean +80.6 (+84.7 at 28 agents), a second time +80.6 (+88.6); after ``strike``: mean +74.5.
KICKSTART_FINETUNE = dict(KICKSTART, kickstart=None, lr=3e-4, num_batches=300)

PRESETS = ("default", "paper", "coordinated", "wide_view", "wide_view_ac", "wide_view_kickstart",
           "wide_view_ac_kickstart", "wide_view_ac_finetune", "kickstart",
           "kickstart_finetune")  # fmt: skip
#: Scenarios each non-default preset applies to.
PRESET_SCENARIOS = {"coordinated": ("deception",), "wide_view": ("jungle",),
                    "wide_view_ac": ("jungle",), "wide_view_kickstart": ("jungle",),
                    "wide_view_ac_kickstart": ("jungle",), "wide_view_ac_finetune": ("jungle",),
                    "kickstart": ("battle",), "kickstart_finetune": ("battle",)}  # fmt: skip
#: Fields each non-default preset sets on top of the scenario's default.
PRESET_FIELDS = {"paper": PAPER, "coordinated": COORDINATED, "wide_view": WIDE_VIEW,
                 "wide_view_ac": WIDE_VIEW_AC, "wide_view_kickstart": WIDE_VIEW_KICKSTART,
                 "wide_view_ac_kickstart": WIDE_VIEW_AC_KICKSTART,
                 "wide_view_ac_finetune": WIDE_VIEW_AC_FINETUNE, "kickstart": KICKSTART,
                 "kickstart_finetune": KICKSTART_FINETUNE}  # fmt: skip
#: Presets that continue a trained run, so need ``init_from`` -> the run each continues.
FINETUNE_PRESETS = {
    "kickstart_finetune": "--preset kickstart (or kickstart_finetune)",
    "wide_view_ac_finetune": "--preset wide_view_ac_kickstart (or wide_view_ac_finetune)",
}


def preset_config(
    scenario: str = "battle", preset: str = "default", **overrides: Any
) -> TrainConfig:
    """The ``preset`` training config of ``scenario`` with ``overrides`` applied (validated),
    before ``require_preset_fields`` (the CLI applies its flags in between)."""
    _one_of("scenario", scenario, envs.SCENARIOS)
    _one_of("preset", preset, PRESETS)
    if scenario not in PRESET_SCENARIOS.get(preset, envs.SCENARIOS):
        usable = [p for p in PRESETS if scenario in PRESET_SCENARIOS.get(p, envs.SCENARIOS)]
        raise ValueError(
            f"invalid config field 'preset'={preset!r}: only for "
            f"{', '.join(PRESET_SCENARIOS[preset])}; choose one of: {', '.join(usable)}"
        )
    fields = {**DEFAULT_PRESETS[scenario], **PRESET_FIELDS.get(preset, {})}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown config field(s) {unknown}; choose from: {', '.join(sorted(known))}"
        )
    return TrainConfig(**{**fields, **overrides})


def require_preset_fields(preset: str, config: TrainConfig) -> TrainConfig:
    """``config``, refused if ``preset`` needs a field it lacks: a fine-tuning preset
    (``FINETUNE_PRESETS``) needs ``init_from``."""
    if preset in FINETUNE_PRESETS and config.init_from is None:
        raise ValueError(
            f"invalid config field 'init_from'=None: preset {preset!r} fine-tunes a trained run; "
            f"give the directory of a {FINETUNE_PRESETS[preset]} run as --init-from RUN"
        )
    return config


def make_config(scenario: str = "battle", preset: str = "default", **overrides: Any) -> TrainConfig:
    """The ``preset`` training config of ``scenario`` with ``overrides`` applied (validated)."""
    return require_preset_fields(preset, preset_config(scenario, preset, **overrides))
