#!/usr/bin/env python3
"""Static checks of everything under deploy/ that cannot run on this machine (Docker, Kubernetes,
systemd as init), plus the tools that can: promtool on the scrape config and on a live /metrics,
systemd-analyze on the unit. Usage: check.py <tern binary>. Needs PyYAML (the schemathesis venv
has it), promtool (Debian package prometheus) and systemd-analyze.

The Helm chart is rendered by a small stand-in for `helm template` that covers exactly the
template constructs the chart uses (helm itself is not installable here); an unknown construct
fails the check instead of being skipped.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
failures = []


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def live_metrics(tern):
    """Starts the relay in dev mode on loopback and returns its /metrics text."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    proc = subprocess.Popen(
        [tern, "--http-listen", f"127.0.0.1:{port}", "--media-listen", "127.0.0.1:0", "--log", "warn"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait()


def check_config_file(tern, name, text):
    """`tern config check` on a config shipped inside another file, with the environment the
    manifests give the container (API key from the Secret, advertised IP from the node)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tern.toml")
        open(path, "w").write(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
        env.update(TERN_API_KEY="check", TERN_API_SECRET="x" * 32, TERN_ADVERTISE_IPS="192.0.2.1")
        r = subprocess.run([tern, "config", "check", path], env=env, capture_output=True, text=True)
        check(f"tern config check: {name}", r.returncode == 0, r.stdout + r.stderr)


def yaml_docs(path, text=None):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(text if text is not None else f.read()) if d is not None]


# --- a minimal `helm template` for the constructs this chart uses ---------------------------

def lookup(values, dotted):
    node = values
    for part in dotted.split("."):
        node = node[part]
    return node


def render_chart(chart_dir, release="tern"):
    values = yaml.safe_load(open(os.path.join(chart_dir, "values.yaml")))
    helpers = open(os.path.join(chart_dir, "templates", "_helpers.tpl")).read()
    defines = {m.group(1): m.group(2).strip("\n")
               for m in re.finditer(r'{{-? define "([^"]+)" -?}}(.*?){{-? end -?}}', helpers, re.S)}
    scope = {"Release": {"Name": release}, "Values": values}

    def value(expr):
        expr = expr.strip()
        if expr.startswith("."):
            return lookup(scope, expr[1:])
        if re.fullmatch(r"-?\d+", expr):
            return int(expr)
        raise ValueError(f"unsupported expression {expr!r}")

    def pipeline(expr, template_path):
        stages = [s.strip() for s in expr.split("|")]
        head = stages[0]
        m = re.fullmatch(r'include "([^"]+)" \.', head)
        if m:
            out = render_text(defines[m.group(1)], template_path)
        elif re.fullmatch(r'include \(print \$\.Template\.BasePath "[^"]+"\) \.', head):
            out = "0" * 64  # a checksum; its value does not matter here
        elif head.startswith("toYaml "):
            out = yaml.safe_dump(value(head[len("toYaml "):]), default_flow_style=False).rstrip("\n")
        elif head.startswith("add "):
            a, b = head[len("add "):].split()
            out = str(value(a) + value(b))
        else:
            v = value(head)
            out = v if isinstance(v, str) else json.dumps(v)
        for stage in stages[1:]:
            m = re.fullmatch(r"nindent (\d+)", stage)
            if m:
                pad = " " * int(m.group(1))
                out = "\n" + "\n".join(pad + line if line else line for line in str(out).split("\n"))
            elif stage == "sha256sum":
                out = "0" * 64
            else:
                raise ValueError(f"unsupported pipeline stage {stage!r} in {template_path}")
        return str(out)

    def render_text(text, template_path):
        # {{- if X }} ... {{- end }} blocks (not nested in this chart).
        def conditional(m):
            return m.group(2) if value(m.group(1)) else ""
        text = re.sub(r"{{-? if (\S+) -?}}(.*?){{-? end -?}}", conditional, text, flags=re.S)

        def action(m):
            trim_left = m.group(1) == "-"
            return ("\x00" if trim_left else "") + pipeline(m.group(2), template_path)
        text = re.sub(r"{{(-?)\s*(.*?)\s*-?}}", action, text)
        # `{{-` removes the whitespace (and newline) before the action.
        return re.sub(r"\s*\x00", "", text)

    rendered = {}
    for name in sorted(os.listdir(os.path.join(chart_dir, "templates"))):
        if name.endswith(".yaml"):
            path = os.path.join(chart_dir, "templates", name)
            rendered[name] = render_text(open(path).read(), path)
    return rendered


def main():
    tern = os.path.abspath(sys.argv[1])
    metrics = live_metrics(tern)
    exposed = set(re.findall(r"^# TYPE (\S+) ", metrics, re.M))

    # Prometheus: the shipped scrape config, and the relay's exposition.
    promtool = shutil.which("promtool")
    check("promtool installed", promtool is not None, "install the Debian package prometheus")
    if promtool:
        r = subprocess.run([promtool, "check", "config", os.path.join(DEPLOY, "prometheus", "prometheus.yml")],
                           capture_output=True, text=True)
        check("promtool check config deploy/prometheus/prometheus.yml", r.returncode == 0, r.stdout + r.stderr)
        r = subprocess.run([promtool, "check", "metrics"], input=metrics, capture_output=True, text=True)
        check("promtool check metrics on /metrics", r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr)

    # Grafana: the dashboard parses, and every metric it queries exists.
    dashboard = json.load(open(os.path.join(DEPLOY, "grafana", "tern-dashboard.json")))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    check("dashboard has queries", len(exprs) >= 10, str(len(exprs)))
    def family(name):
        # Histogram series (`_bucket`, `_sum`, `_count`) belong to the histogram's family.
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        return base if base in exposed else name
    queried = {family(n) for e in exprs for n in re.findall(r"\b((?:tern|process)_[a-z_]+)", e)}
    missing = sorted(queried - exposed)
    check("every metric the dashboard queries exists in /metrics", not missing, ", ".join(missing))
    for f in ("datasources/prometheus.yml", "dashboards/tern.yml"):
        docs = yaml_docs(os.path.join(DEPLOY, "grafana", "provisioning", f))
        check(f"grafana provisioning {f} parses", len(docs) == 1 and docs[0].get("apiVersion") == 1)

    # Kubernetes manifests.
    kinds = {}
    for name in sorted(os.listdir(os.path.join(DEPLOY, "kubernetes"))):
        for doc in yaml_docs(os.path.join(DEPLOY, "kubernetes", name)):
            ok = all(k in doc for k in ("apiVersion", "kind", "metadata")) and "name" in doc["metadata"]
            check(f"kubernetes/{name} is a Kubernetes object", ok)
            kinds[doc["kind"]] = doc
    check("kubernetes: the objects an install needs",
          {"Namespace", "Secret", "ConfigMap", "Deployment", "Service", "ServiceMonitor"} <= set(kinds), str(sorted(kinds)))
    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    check("deployment: hostNetwork for the UDP port", pod.get("hostNetwork") is True)
    check("deployment: readiness on /readyz, liveness on /healthz",
          container["readinessProbe"]["httpGet"]["path"] == "/readyz"
          and container["livenessProbe"]["httpGet"]["path"] == "/healthz")
    check("deployment: preStop starts the drain", "kill -TERM 1" in " ".join(container["lifecycle"]["preStop"]["exec"]["command"]))
    config = kinds["ConfigMap"]["data"]["tern.toml"]
    drain = int(re.search(r"timeout_s = (\d+)", config).group(1))
    check("deployment: grace period covers the drain timeout", pod["terminationGracePeriodSeconds"] > drain)
    check("deployment: runs as non-root", pod["securityContext"]["runAsNonRoot"] is True)
    check_config_file(tern, "kubernetes/configmap.yaml tern.toml", config)

    # Helm chart.
    chart = os.path.join(DEPLOY, "helm", "tern")
    meta = yaml_docs(os.path.join(chart, "Chart.yaml"))[0]
    check("helm Chart.yaml", meta.get("apiVersion") == "v2" and meta.get("name") == "tern")
    yaml_docs(os.path.join(chart, "values.yaml"))
    try:
        rendered = render_chart(chart)
        rendered_kinds = set()
        for name, text in rendered.items():
            for doc in yaml.safe_load_all(text):
                if doc:
                    rendered_kinds.add(doc["kind"])
        check("helm templates render to Kubernetes objects",
              {"ConfigMap", "Deployment", "Service", "ServiceMonitor"} <= rendered_kinds, str(sorted(rendered_kinds)))
        helm_config = next(yaml.safe_load_all(rendered["configmap.yaml"]))["data"]["tern.toml"]
        check_config_file(tern, "helm configmap tern.toml", helm_config)
    except Exception as err:  # noqa: BLE001 - any failure to render is a failed check
        check("helm templates render", False, repr(err))

    # Compose and the Dockerfile (Docker cannot run here: static checks only).
    compose = yaml_docs(os.path.join(DEPLOY, "docker-compose.yml"))[0]
    check("docker-compose: tern, prometheus, grafana", {"tern", "prometheus", "grafana"} <= set(compose["services"]))
    dockerfile = open(os.path.join(DEPLOY, "Dockerfile")).read()
    stages = re.findall(r"^FROM ", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    check("Dockerfile: multi-stage", len(stages) >= 2)
    check("Dockerfile: runs as non-root", bool(user) and not user[-1].startswith(("root", "0")))
    check("Dockerfile: ports and stop signal",
          "EXPOSE 8080/tcp 50000-50003/udp" in dockerfile and "STOPSIGNAL SIGTERM" in dockerfile)
    ignore = open(os.path.join(ROOT, ".dockerignore")).read().split()
    check(".dockerignore keeps target/ out of the build context", "target" in ignore)

    # systemd: the unit verifies with no warnings (ExecStart pointed at the built binary).
    analyze = shutil.which("systemd-analyze")
    check("systemd-analyze installed", analyze is not None)
    if analyze:
        unit = open(os.path.join(DEPLOY, "systemd", "tern.service")).read()
        stop = int(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1))
        check("systemd: stop timeout covers the default drain timeout", stop > 1800)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "tern.service")
            open(path, "w").write(unit.replace("/usr/local/bin/tern", tern))
            r = subprocess.run([analyze, "verify", path], capture_output=True, text=True)
            out = (r.stdout + r.stderr).strip()
            check("systemd-analyze verify deploy/systemd/tern.service", r.returncode == 0 and not out, out)

    print(f"{len(failures)} failed" if failures else "all deploy checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
