"""Static instances: the ones named by environment or the catalogue, not by registration.

For each catalogue model, the first of these that applies:

0. The gateway settings' ``instance_urls`` (model key -> URLs), when given: exactly those.
1. ``<KEY>_API_URL`` (e.g. ``SMOLLM2_135M_API_URL``): one URL, or several separated by commas;
   set but empty means the model has no static instance.
2. ``BASE_DOMAIN`` (or the catalogue's ``fleet.base_domain``): ``https://<hostname>.<domain>``.
3. With ``catalogue_instances`` on, the local fleet's ports: instance *i* of a model listens on
   ``http://<fleet.service_host>:<port + i>`` for i below its ``instances``.
"""

from __future__ import annotations

import os
from typing import Mapping

from gateway.instances import Instance
from shared.catalogue import Catalogue, env_key


def api_url_env(model_key: str) -> str:
    return f"{env_key(model_key)}_API_URL"


def static_base_domain(catalogue: Catalogue, environ: Mapping[str, str] | None = None) -> str | None:
    """The fleet's tunnel domain: ``BASE_DOMAIN``, else the catalogue's ``fleet.base_domain``."""
    env = os.environ if environ is None else environ
    return env.get("BASE_DOMAIN") or catalogue.fleet.base_domain


def static_instances(catalogue: Catalogue, *, use_catalogue: bool = True,
                     environ: Mapping[str, str] | None = None,
                     urls: Mapping[str, list[str]] | None = None) -> list[Instance]:
    env = os.environ if environ is None else environ
    if urls is not None:  # explicit: these models' URLs, no other instance
        env = {api_url_env(key): ",".join(urls.get(key, [])) for key in catalogue.models}
    base_domain = static_base_domain(catalogue, env)
    found: list[Instance] = []
    for key, spec in catalogue.models.items():
        name = api_url_env(key)
        if name in env:
            urls = [url.strip().rstrip("/") for url in env[name].split(",") if url.strip()]
        elif base_domain:
            urls = [f"https://{spec.hostname}.{base_domain.strip('.')}"]
        elif use_catalogue:
            host = catalogue.fleet.service_host
            urls = [f"http://{host}:{spec.port + i}" for i in range(spec.instances)]
        else:
            urls = []
        for i, url in enumerate(urls):
            found.append(Instance(instance_id=f"{key}-{i}", model=key, url=url, source="static",
                                  capacity_hint=spec.parallel))
    return found
