"""Frames of grid-world states: a state to an RGB image, an episode to a GIF (Pillow).

Colours: team 0 blue, team 1 red, food / landmarks green, targets gold, off-grid not drawn. Jungle
agents fade as they lose hp. Large grids are drawn at 1 pixel per cell or cropped (``crop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from envs import core

BACKGROUND = (245, 245, 240)
GRID_LINE = (225, 225, 220)
TEAM_COLOURS = ((40, 90, 200), (210, 50, 50), (60, 160, 90), (150, 80, 180))
ITEM_COLOUR = (90, 180, 90)
TARGET_COLOUR = (235, 180, 30)


def frame(env, state, cell_px: int | None = None, crop: tuple[int, int, int, int] | None = None):
    """RGB image of one (unbatched) state -> ``uint8[H * px, W * px, 3]``.

    Args:
      env: the scenario the state belongs to.
      state: an unbatched env state.
      cell_px: pixels per cell (default: about 480 pixels across, at least 1).
      crop: optional ``(row0, col0, rows, cols)`` window of the grid to draw.
    """
    cfg = env.config
    row0, col0, rows, cols = crop or (0, 0, cfg.height, cfg.width)
    px = cell_px or max(1, 480 // max(rows, cols))
    grid = jax.device_get(state.grid)
    pad = env.spec.pad
    terrain = np.asarray(grid.terrain).reshape(env.spec.padded_height, env.spec.padded_width)
    terrain = terrain[pad + row0 : pad + row0 + rows, pad + col0 : pad + col0 + cols]
    image = np.empty((rows, cols, 3), np.uint8)
    image[:] = BACKGROUND
    image[terrain == core.ITEM] = ITEM_COLOUR
    image[terrain == core.TARGET] = TARGET_COLOUR
    positions = np.asarray(grid.positions) - [row0, col0]
    shown = (
        np.asarray(grid.alive)
        & (positions[:, 0] >= 0)
        & (positions[:, 0] < rows)
        & (positions[:, 1] >= 0)
        & (positions[:, 1] < cols)
    )
    colours = np.asarray(TEAM_COLOURS, np.float32)[np.asarray(grid.team) % len(TEAM_COLOURS)]
    hp = getattr(state, "hp", None)
    if hp is not None:  # fade toward the background as hp drops
        health = np.clip(np.asarray(hp) / cfg.start_hp, 0, 1)[:, None]
        colours = colours * (0.35 + 0.65 * health) + np.asarray(BACKGROUND) * 0.65 * (1 - health)
    agents = np.zeros((rows, cols, 3), np.uint8)
    occupied = np.zeros((rows, cols), bool)
    agents[positions[shown, 0], positions[shown, 1]] = colours[shown].astype(np.uint8)
    occupied[positions[shown, 0], positions[shown, 1]] = True
    image, agents = (a.repeat(px, axis=0).repeat(px, axis=1) for a in (image, agents))
    occupied = occupied.repeat(px, axis=0).repeat(px, axis=1)
    inset = max(1, px // 6) if px >= 6 else 0  # agents drawn inset: the terrain shows around them
    within = np.zeros((px, px), bool)
    within[inset : px - inset, inset : px - inset] = True
    occupied &= np.tile(within, (rows, cols))
    image[occupied] = agents[occupied]
    if px >= 6:  # light grid lines between cells
        image[::px, :] = GRID_LINE
        image[:, ::px] = GRID_LINE
    return image


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an RGB array as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: int = 6) -> Path:
    """Write RGB frames as a looping GIF; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def record_episode(env, params, policy, key: jax.Array):
    """Play one episode without auto-reset under ``policy(key, state) -> int32[N]``.

    Returns:
      ``(states, length)``: the states stacked over ``max_steps + 1`` (frozen once the episode
      ends) and the number of meaningful ones.
    """

    @jax.jit
    def run(key):
        reset_key, key = jax.random.split(key)
        _, state = env.reset(reset_key, params)

        def body(carry, key):
            state, done = carry
            policy_key, step_key = jax.random.split(key)
            _, next_state, _, terminated, truncated, _ = env.step_no_reset(
                step_key, state, policy(policy_key, state), params
            )
            next_state = jax.tree.map(lambda a, b: jnp.where(done, a, b), state, next_state)
            return (next_state, done | terminated | truncated), (next_state, done)

        _, (states, done_before) = jax.lax.scan(
            body, (state, jnp.bool_(False)), jax.random.split(key, env.config.max_steps)
        )
        states = jax.tree.map(lambda first, rest: jnp.concatenate([first[None], rest]), state,
                              states)  # fmt: skip
        return states, 1 + jnp.sum(~done_before)

    return run(key)


def unstack(states, count: int) -> list:
    """Split a state pytree stacked on a leading time axis into ``count`` states."""
    return [jax.tree.map(lambda x, t=t: x[t], states) for t in range(count)]
