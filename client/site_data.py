"""Where a site's data, prepared cache and privacy ledger are, for the ClientApp.

A deployed site (a hospital's SuperNode) names its data folder in node config (``data-path``,
with optional ``cache-dir`` and ``ledger-dir``). A virtual site of Flower's simulation engine
has only its ``partition-id``: site k is the k-th sub-folder (sorted) of ``simulation.sites-dir``,
and its cache and ledger live under ``simulation.state-dir``.

The cache is (re)prepared when it is missing or was prepared with other data settings.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from common.config import FedsynthConfig, Scalar, SiteConfig
from common.data.cache import INDEX_FILE, data_settings, read_cache
from common.data.site import prepare_site
from common.errors import ConfigError, DataError

LOGGER = logging.getLogger("fedsynth.client")

DEFAULT_STATE_DIR = Path.home() / ".fedsynth"
"""A deployed site's caches (``cache/``) and privacy ledgers (``privacy-ledger/``) by default."""
DEFAULT_LEDGER_DIR = DEFAULT_STATE_DIR / "privacy-ledger"
"""Where a site's privacy ledger lives unless --ledger (or node config ``ledger-dir``) says."""
PARTITION_KEY = "partition-id"
"""Node-config key Flower's simulation engine gives each virtual site."""
STATE_SUFFIX = "-state"
"""``simulation.state-dir`` defaults to ``<sites-dir>-state``."""


@dataclass(frozen=True)
class SiteFiles:
    """A site's data folder, its prepared cache and its privacy-ledger folder."""

    data: Path
    cache: Path
    ledger_dir: Path


def site_files(node_config: dict[str, Scalar], config: FedsynthConfig) -> SiteFiles:
    """Where this site's data, cache and ledger are (see the module docstring).

    Raises:
        ConfigError: the node has neither ``data-path`` nor a partition of
            ``simulation.sites-dir``; the message says which setting to give.
    """
    site = SiteConfig.from_node_config(node_config)
    if site.data_path is not None:
        key = hashlib.sha256(str(site.data_path.resolve()).encode()).hexdigest()[:16]
        return SiteFiles(
            data=site.data_path,
            cache=site.cache_dir or DEFAULT_STATE_DIR / "cache" / key,
            ledger_dir=site.ledger_dir or DEFAULT_LEDGER_DIR,
        )
    partition = node_config.get(PARTITION_KEY)
    if partition is None or not config.simulation.sites_dir:
        raise ConfigError(
            "this site has no data: start its SuperNode with --node-config "
            "\"data-path='/path/to/site'\" (a deployed site), or set simulation.sites-dir to a "
            "folder with one sub-folder per virtual site (a simulation)"
        )
    sites_dir = Path(config.simulation.sites_dir)
    sites = sorted(p for p in sites_dir.iterdir() if p.is_dir()) if sites_dir.is_dir() else []
    index = int(partition)
    if not 0 <= index < len(sites):
        raise ConfigError(
            f"virtual site {index} has no folder: simulation.sites-dir = {sites_dir} holds "
            f"{len(sites)} site folders; run as many virtual sites as there are folders"
        )
    state = Path(config.simulation.state_dir or f"{sites_dir}{STATE_SUFFIX}")
    name = sites[index].name
    return SiteFiles(
        data=sites[index],
        cache=site.cache_dir or state / "cache" / name,
        ledger_dir=site.ledger_dir or state / "ledger" / name,
    )


def ensure_prepared(files: SiteFiles, config: FedsynthConfig) -> Path:
    """The site's cache, prepared now if missing, made with other data settings, or made by a
    fedsynth without per-case source fingerprints (which the privacy ledger needs).

    Raises:
        SiteDataError, DataError: the site's data has problems (each names its file).
    """
    if (files.cache / INDEX_FILE).is_file():
        try:
            index, _ = read_cache(files.cache)
        except DataError:
            LOGGER.warning("the site's cache cannot be read: preparing it again")
        else:
            if not index.case_fingerprints:
                LOGGER.info("the site's cache has no per-case fingerprints: preparing it again")
            elif dict(index.settings) == data_settings(config.data):
                return files.cache
            LOGGER.info("data settings changed since the site's cache was made: preparing again")
    summary = prepare_site(files.data, files.cache, config.data, overwrite=True)
    LOGGER.info("prepared %d cases (%d left out)", summary.prepared, summary.skipped)
    return files.cache
