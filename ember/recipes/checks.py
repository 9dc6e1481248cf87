"""Up-front checks of a command line, before Hydra makes any directory: the overrides compose
(Hydra's own error, plus "did you mean" for a misspelled key or option), and no required value
(``???``) is left unset.

The config is composed here with Hydra's Compose API, the same way ``hydra.main`` composes it.
"""

from __future__ import annotations

import contextlib
import difflib
import os

from ember.recipes import CONFIG_MODULE


class UsageError(Exception):
    """A command line that cannot run; the message says what to change."""


@contextlib.contextmanager
def _initialize(config_dir: str | None, job_name: str, config_path: str | None = None):
    """Hydra set up as ``hydra.main`` sets it up for ``ember-train``: the packaged configs, or
    the ``--config-path`` search path that replaces them (absolute or ``pkg://``, as
    ``train._search_path_of`` resolves it), and a ``--config-dir`` added to the search path
    the way Hydra adds it. This is how hydra.main builds it (hydra._internal; hydra-core is
    pinned to 1.3.x in pyproject.toml for that reason): the public initialize_* functions take
    one directory and no additional one."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    primary = f"pkg://{CONFIG_MODULE}" if config_path is None else config_path
    search_path = create_automatic_config_search_path(None, "ember.recipes.train", primary)
    if config_dir:
        path = os.path.abspath(config_dir)
        if not os.path.isdir(path):
            raise UsageError(f"--config-dir: additional config directory '{path}' not found")
        search_path.prepend(
            provider="command-line",
            path=f"file://{path}",
            anchor=SearchPathQuery(provider="schema"),
        )
    gh = GlobalHydra.instance()
    gh.clear()
    Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)
    try:
        yield
    finally:
        gh.clear()


def first_of_sweeps(overrides: list) -> list:
    """A multirun's overrides with every sweep replaced by its first value (what the first job
    composes), so the whole sweep can be checked with one composition."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out = []
    for text, ov in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()))
            out.append(f"{ov.get_key_element()}={first}")
        else:
            out.append(text)
    return out


def compose(
    config_name: str,
    overrides: list,
    config_dir=None,
    job_name="train",
    hydra=False,
    config_path=None,
):
    """The composed config (with the ``hydra`` node when ``hydra``)."""
    from hydra import compose as hydra_compose

    with _initialize(config_dir, job_name, config_path):
        return hydra_compose(
            config_name,
            overrides=list(overrides),
            return_hydra_config=hydra,
        )


def _keys(node, prefix: str = "") -> list:
    from omegaconf import DictConfig

    out = []
    for key in node.keys() if isinstance(node, DictConfig) else []:
        path = f"{prefix}{key}"
        out.append(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            out += _keys(child, path + ".")
    return out


def _groups(loader, parent: str = "") -> list:
    out = []
    for name in loader.list_groups(parent):
        path = f"{parent}/{name}" if parent else name
        if not path.startswith("hydra"):
            out.append(path)
            out += _groups(loader, path)
    return out


def suggestions(
    config_name: str, overrides: list, config_dir=None, job_name="train", config_path=None
) -> list:
    """Hint lines ("did you mean ...?") for the overrides that name no config key, no config
    group, or no option of their group. Keys are judged against the config composed with the
    command line's valid group choices, so ``model=cnn_mnist model.chanels=...`` is compared
    with the CNN's keys."""
    from hydra import compose as hydra_compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return []  # a syntax error: Hydra's message says where
    hints = []
    with _initialize(config_dir, job_name, config_path):
        loader = GlobalHydra.instance().config_loader()
        groups = _groups(loader)
        good_choices = []
        for text, ov in zip(overrides, parsed):
            if ov.key_or_group in groups and not ov.is_sweep_override():
                options = loader.get_group_options(ov.key_or_group)
                value = ov.value()
                if value is None or value in options:
                    good_choices.append(text)
                    continue
                close = difflib.get_close_matches(str(value), options, n=3, cutoff=0.5)
                alts = " or ".join(f"{ov.key_or_group}={c}" for c in close)
                hints.append(
                    f"{text}: no option {value!r} in group '{ov.key_or_group}'"
                    + (f"; did you mean {alts}?" if close else "")
                    + f" (options: {', '.join(sorted(options))})"
                )
        try:
            base = hydra_compose(config_name, overrides=good_choices)
        except Exception:
            base = hydra_compose(config_name, overrides=[])
        keys = _keys(base)
    known = set(keys) | set(groups)
    by_leaf: dict = {}
    for k in keys:
        by_leaf.setdefault(k.rsplit(".", 1)[-1], []).append(k)
    for text, ov in zip(overrides, parsed):
        key = ov.key_or_group
        if key in known or key.startswith("hydra") or ov.is_add() or ov.is_force_add():
            continue
        close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.6)
        leaf = key.rsplit(".", 1)[-1]
        close += [k for k in by_leaf.get(leaf, []) if k not in close]
        if close:
            value = text.split("=", 1)[1] if "=" in text else "..."
            alts = " or ".join(f"{c}={value}" for c in close[:3])
            hints.append(f"{text}: there is no key '{key}'; did you mean {alts}?")
        else:
            hints.append(f"{text}: there is no key '{key}' (prefix it with + to add a new key)")
    return hints


def missing_values(cfg, prefix: str = "") -> list:
    """Dotted keys whose value is ``???`` (required, not given); interpolations are not
    resolved (``${hydra:...}`` has no value before Hydra runs)."""
    from omegaconf import DictConfig, ListConfig

    out = []
    keys = range(len(cfg)) if isinstance(cfg, ListConfig) else cfg.keys()
    for key in keys:
        node = cfg._get_node(key)
        path = f"{prefix}[{key}]" if isinstance(cfg, ListConfig) else f"{prefix}{key}"
        if path.startswith("hydra"):
            continue
        if node._is_missing():
            out.append(path)
        elif (
            isinstance(node, (DictConfig, ListConfig))
            and not node._is_none()
            and not node._is_interpolation()
        ):
            out += missing_values(node, path + ("" if isinstance(node, ListConfig) else "."))
    return sorted(out)


def _error_text(exc: BaseException) -> str:
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = str(exc).strip()
        if text and text not in parts:
            parts.append(text)
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def check_command_line(
    config_name: str,
    overrides: list,
    config_dir=None,
    multirun: bool = False,
    job_name="train",
    config_path=None,
):
    """Compose ``overrides`` (a multirun's first job) and check required values; returns the
    config (without the ``hydra`` node). Raises UsageError with Hydra's message and the hints."""
    to_compose = first_of_sweeps(overrides) if multirun else list(overrides)
    try:
        cfg = compose(config_name, to_compose, config_dir, job_name, config_path=config_path)
    except Exception as exc:
        try:
            hints = suggestions(config_name, to_compose, config_dir, job_name, config_path)
        except Exception:  # e.g. no primary config dir: Hydra's message below says so
            hints = []
        text = _error_text(exc)
        if hints:
            text += "\n\n" + "\n".join(hints)
        raise UsageError(text) from None
    missing = missing_values(cfg)
    if missing:
        lines = "\n".join(f"  {k}=..." for k in missing)
        raise UsageError(f"missing required values; set them on the command line:\n{lines}")
    return cfg
