#!/usr/bin/env python3
"""Draws one subscriber's estimate, sent rate and layer over time as an SVG (no dependencies).

Input: the CSV that `TERN_TEST_BANDWIDTH_TRACE=<file> cargo test --test sim_bandwidth
a_squeezed_subscriber` writes (seconds, capacity_bps, estimate_bps, sent_bps, layer; the simulation has no retransmissions). Usage:
    python3 docs/plot_bandwidth.py trace.csv docs/bandwidth-drop.svg
"""
import csv
import sys

W, H = 900, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 70, 40, 50
LAYERS = ["paused", "320x180", "640x360", "1280x720"]


def main(src, dst):
    rows = [tuple(float(v) for v in r) for r in csv.reader(open(src)) if r and r[0][0].isdigit()]
    t0, t1 = rows[0][0], rows[-1][0]
    top = max(max(r[1], r[2], r[3]) for r in rows) * 1.1
    x = lambda t: LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT)
    y = lambda bps: H - BOTTOM - bps / top * (H - TOP - BOTTOM)
    ylayer = lambda layer: H - BOTTOM - (layer + 1) / len(LAYERS) * (H - TOP - BOTTOM) * 0.9

    def line(points, colour, width=2, dash=""):
        d = " ".join(f"{'M' if i == 0 else 'L'}{px:.1f},{py:.1f}" for i, (px, py) in enumerate(points))
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width}"{extra}/>'

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']
    for mbps in range(0, int(top / 1e6) + 1):
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(mbps * 1e6):.1f}" y2="{y(mbps * 1e6):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y(mbps * 1e6) + 4:.1f}" text-anchor="end">{mbps} Mbit/s</text>')
    for s in range(int(t0), int(t1) + 1, 10):
        out.append(f'<text x="{x(s):.1f}" y="{H - BOTTOM + 18}" text-anchor="middle">{s} s</text>')
    for i, name in enumerate(LAYERS):
        out.append(f'<text x="{W - RIGHT + 6}" y="{ylayer(i - 1) + 4:.1f}" fill="#2a7">{name}</text>')
    # The layer as a step line.
    steps = []
    for r in rows:
        if steps:
            steps.append((x(r[0]), steps[-1][1]))
        steps.append((x(r[0]), ylayer(r[4])))
    out.append(line([(x(r[0]), y(r[1])) for r in rows], "#999", 2, "6,4"))
    out.append(line([(x(r[0]), y(r[3])) for r in rows], "#d62", 1.5))
    out.append(line([(x(r[0]), y(r[2])) for r in rows], "#27c", 2))
    out.append(line(steps, "#2a7", 2))
    legend = [("#999", "link capacity"), ("#27c", "estimate"), ("#d62", "sent (media and probes)"), ("#2a7", "layer (right axis)")]
    for i, (colour, text) in enumerate(legend):
        lx = LEFT + 10 + i * 190
        out.append(f'<rect x="{lx}" y="12" width="14" height="4" fill="{colour}"/><text x="{lx + 20}" y="18">{text}</text>')
    out.append("</svg>")
    open(dst, "w").write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
