"""A Pod Security Admission checker for the rules that matter to the pods flops-bot ships and starts.

The `baseline` and `restricted` levels of https://kubernetes.io/docs/concepts/security/pod-security-standards/
as `violations(pod_spec, level)`: an empty list when the API server's PodSecurity admission (at that
level, version v1.30 and later) would admit the pod. Windows HostProcess, AppArmor and sysctls are
left out: nothing in deploy/ or bot/core/jobs sets them (`violations` says so when something does).
"""
from __future__ import annotations

from typing import Any

LEVELS = ("privileged", "baseline", "restricted")
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
UNCHECKED = ("sysctls", "appArmorProfile", "windowsOptions")


def level_of(namespace: dict[str, Any], mode: str = "enforce") -> str:
    """The namespace's `pod-security.kubernetes.io/<mode>` level (`privileged` when unlabelled)."""
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    level = labels.get(f"pod-security.kubernetes.io/{mode}", "privileged")
    assert level in LEVELS, f"unknown Pod Security level {level!r}"
    return str(level)


def violations(pod: dict[str, Any], level: str) -> list[str]:
    """What in `pod` (a PodSpec) the level forbids; [] when it is admitted."""
    if level == "privileged":
        return []
    found = _baseline(pod)
    if level == "restricted":
        found += _restricted(pod)
    return found


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or []), *(pod.get("ephemeralContainers") or [])]


def _baseline(pod: dict[str, Any]) -> list[str]:
    found = [f"spec.{key}: host namespaces are forbidden" for key in ("hostNetwork", "hostPID", "hostIPC")
             if pod.get(key)]
    found += [f"volume {v['name']}: hostPath is forbidden" for v in pod.get("volumes") or [] if "hostPath" in v]
    pod_context = pod.get("securityContext") or {}
    found += [f"spec.securityContext.{key} is not checked here" for key in UNCHECKED if key in pod_context]
    for where, context in [("spec", pod_context)] + [(c["name"], c.get("securityContext") or {})
                                                     for c in _containers(pod)]:
        if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
            found.append(f"{where}: seccomp Unconfined is forbidden")
        selinux = context.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
            found.append(f"{where}: seLinuxOptions {selinux} are forbidden")
    for container in _containers(pod):
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("privileged"):
            found.append(f"{name}: privileged is forbidden")
        extra = set((context.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if extra:
            found.append(f"{name}: capabilities {sorted(extra)} are beyond baseline")
        if context.get("procMount", "Default") != "Default":
            found.append(f"{name}: procMount {context['procMount']} is forbidden")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort is forbidden")
        found += [f"{name}: securityContext.{key} is not checked here" for key in UNCHECKED if key in context]
    return found


def _restricted(pod: dict[str, Any]) -> list[str]:
    found = [f"volume {v['name']}: type {sorted(set(v) - {'name'})} is not allowed by restricted"
             for v in pod.get("volumes") or [] if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    pod_context = pod.get("securityContext") or {}
    if pod_context.get("runAsUser") == 0:
        found.append("spec: runAsUser 0 is forbidden")
    for container in _containers(pod):
        name, context = container["name"], container.get("securityContext") or {}
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation must be false")
        if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot must be true (pod or container)")
        if context.get("runAsUser") == 0:
            found.append(f"{name}: runAsUser 0 is forbidden")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities may add only NET_BIND_SERVICE")
    return found
