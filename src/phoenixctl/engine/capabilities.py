"""What a provider can do, checked against what the spec asks of it before anything runs."""

from __future__ import annotations

from .. import drivers
from ..errors import SpecError
from ..spec import LoadedSpec


def check_provider(loaded: LoadedSpec) -> None:
    """The provider exists and can do what the spec asks of it; checked before anything runs."""
    spec, provider = loaded.spec, loaded.spec.provider.name
    try:
        capabilities = drivers.capabilities(provider)
    except KeyError:
        raise SpecError(f"{loaded.where('provider')}: provider: unknown provider {provider!r} (providers: {', '.join(drivers.names())})") from None

    def fail(loc: tuple, message: str) -> None:
        raise loaded.error(loc, message)

    for loc, rollout in [(("defaults", "rollout"), spec.defaults.rollout)] + [
        (("environments", env, "rollout"), e.rollout) for env, e in spec.environments.items() if e.rollout
    ]:
        refusal = strategy_refusal(provider, rollout.strategy, capabilities)
        if refusal:
            fail(loc + ("strategy",), refusal)
    for env, environment in spec.environments.items():
        if environment.mode == "in-place" and "in_place" not in capabilities:
            fail(("environments", env, "mode"), f"provider {provider} cannot update servers in place (mode: in-place)")
    for name, image in spec.images.items():
        for ref in ("prebuilt", "base"):
            if getattr(image, ref) is not None and "image_refs" not in capabilities:
                fail(("images", name, ref), f"provider {provider} bakes its images from the project's files; {ref} is for cloud providers")
    for name, role in spec.roles.items():
        if role.discovery.type == "floating_ip" and "floating_ip" not in capabilities:
            fail(("roles", name, "discovery", "type"), f"provider {provider} has no floating IPs")
        if role.discovery.type == "floating_ip" and not spec.provider.server_checks:
            fail(("roles", name, "discovery", "type"), "a floating IP has no health check of its own: it needs provider.server_checks")
        zoned = [env for env, e in spec.environments.items() if e.dns_zone and name in e.roles]
        if role.discovery.dns and zoned and "dns" not in capabilities:
            fail(("roles", name, "discovery", "dns"), f"provider {provider} keeps no DNS records (environment {zoned[0]} names a dns_zone)")
        if role.persistent and "persistent_layer" not in capabilities:
            fail(("roles", name, "persistent"), f"provider {provider} has no persistent layer; use a managed store (EFS, RDS, S3) and pass its address in env")
        if not spec.provider.server_checks and role.warmup and role.warmup.enabled:
            fail(("roles", name, "warmup"), "warm-up needs provider.server_checks (Phoenix crawls each new server itself); set warmup.enabled: false")
    check_account(loaded)


def check_account(loaded: LoadedSpec) -> None:
    """What the account itself lacks (an OpenStack catalogue without Octavia or Designate)."""
    spec = loaded.spec
    missing = drivers.unavailable(spec.provider.name, spec.provider)
    for name, role in spec.roles.items():
        if role.discovery.type in missing:
            raise loaded.error(("roles", name, "discovery", "type"), missing[role.discovery.type])
        zoned = [env for env, e in spec.environments.items() if e.dns_zone and name in e.roles]
        if role.discovery.dns and zoned and "dns" in missing:
            raise loaded.error(("roles", name, "discovery", "dns"), f"{missing['dns']} (environment {zoned[0]} names a dns_zone)")


def strategy_refusal(provider: str, strategy: str, capabilities: frozenset[str]) -> str:
    """'' when the provider can run the strategy, else why not."""
    need = {"blue-green": "standby", "canary": "counters"}.get(strategy)
    if need and need not in capabilities:
        return f"provider {provider} cannot run {strategy} deployments (its balancers lack {need} members)"
    return ""
