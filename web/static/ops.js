// The operations monitor (/ops): live tables and charts from /api/ops/live (server-sent
// events, one sample a second), alarms for transcoders behind real time or dropping
// frames, and plots of the anonymous statistics (/api/stats). No libraries: the charts
// are drawn on <canvas> here.
"use strict";

(function () {
  const VB = window.VB;
  const t = VB.t;
  const HISTORY = 300; // samples (seconds) shown in the live charts
  const COLORS = ["#0b5cab", "#b3261e", "#1e7b34", "#8a5a00", "#6b3fa0", "#00838f"];
  const samples = [];
  let consultations = [];
  let stats = null;

  function $(id) {
    return document.getElementById(id);
  }

  function fmtBytes(n) {
    if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
    if (n >= 1 << 20) return (n / (1 << 20)).toFixed(0) + " MiB";
    return (n / 1024).toFixed(0) + " KiB";
  }

  function fmtRate(bps) {
    if (bps >= 1e6) return (bps / 1e6).toFixed(2) + " Mbit/s";
    return (bps / 1e3).toFixed(0) + " kbit/s";
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  // -- tables ----------------------------------------------------------------------------
  function renderSummary(sample) {
    const p = sample.process;
    $("sum-cpu").textContent =
      VB.i18n.number(p.cpu_percent, 1) + " % (" + VB.i18n.number(p.cpu_cores, 2) + " / " + p.cores + ")";
    $("sum-memory").textContent = fmtBytes(p.rss_bytes);
    $("sum-consultations").textContent = String(consultations.length);
    $("sum-transcoders").textContent = String(sample.transcoders.length);
    const a = sample.admission;
    const el = $("sum-admission");
    el.textContent = t(a.accepting_consultations ? "ops.admission.open" : "ops.admission.closed", {
      load: VB.i18n.number(a.load_cores, 2),
      budget: VB.i18n.number(a.budget_cores, 2),
    });
    el.className = a.accepting_consultations ? "ok" : "alarm";
  }

  function renderTranscoders(sample) {
    const body = $("ops-transcoders").tBodies[0];
    body.textContent = "";
    sample.transcoders.forEach(function (row) {
      const tr = document.createElement("tr");
      cell(tr, "#" + row.number);
      cell(tr, row.consultation, "mono");
      cell(tr, t("ops.direction." + row.direction));
      cell(tr, row.codec, "mono");
      cell(tr, VB.i18n.number(row.fps, 1), "num");
      cell(tr, fmtRate(row.bitrate), "num");
      const rtf = row.realtime_factor;
      cell(tr, rtf === null ? "–" : VB.i18n.number(rtf, 1) + "×", "num" + (rtf !== null && rtf < 1 ? " alarm" : ""));
      cell(tr, VB.i18n.number(100 * row.cpu_share, 1) + " %", "num");
      cell(tr, String(row.queue_depth), "num");
      cell(tr, row.dropped_total + (row.dropped ? " (+" + row.dropped + ")" : ""), "num" + (row.dropped ? " alarm" : ""));
      cell(tr, String(row.keyframe_requests), "num");
      if (row.alarms.length) tr.className = "alarm-row";
      body.appendChild(tr);
    });
    $("no-transcoders").hidden = sample.transcoders.length > 0;
  }

  function renderConsultations() {
    const body = $("ops-consultations").tBodies[0];
    body.textContent = "";
    const now = Date.now() / 1000;
    consultations.forEach(function (c) {
      const tr = document.createElement("tr");
      cell(tr, c.id, "mono");
      ["advisor", "customer"].forEach(function (role) {
        const p = c.participants[role];
        const via =
          p && p.via.length
            ? p.via
                .map(function (v) {
                  return t("ops.via." + v);
                })
                .join(", ")
            : t("ops.absent");
        cell(tr, via);
      });
      cell(tr, VB.i18n.time(Math.max(0, now - c.created_at)), "num");
      body.appendChild(tr);
    });
  }

  function renderAlarms(sample) {
    const list = $("alarm-list");
    list.textContent = "";
    sample.alarms.forEach(function (a) {
      const li = document.createElement("li");
      li.textContent = t("ops.alarm." + a.kind, { transcoder: a.transcoder, frames: a.frames || 0 });
      list.appendChild(li);
    });
    $("ops-alarms").hidden = sample.alarms.length === 0;
  }

  // -- charts ----------------------------------------------------------------------------
  function prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    return { ctx: ctx, w: w, h: h };
  }

  const LINE = 13; // px per line of text below a chart

  // The plot area is c.top .. c.bottom (set by the chart: room for its legend or labels).
  // counts: whole numbers only (the top of the axis is a multiple of 4, so every one of
  // the 4 steps is a whole number too).
  function axes(c, max, unit, counts) {
    const ctx = c.ctx;
    ctx.strokeStyle = "#d5dbe3";
    ctx.fillStyle = "#5a6470";
    for (let i = 0; i <= 4; i++) {
      const y = c.top + ((c.bottom - c.top) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(40, y);
      ctx.lineTo(c.w - 4, y);
      ctx.stroke();
      const value = max * (1 - i / 4);
      const text = counts || value >= 100 ? VB.i18n.number(Math.round(value)) : VB.i18n.number(value, 1);
      ctx.fillText(text, 2, y + 4);
    }
    if (unit) {
      ctx.fillText(unit, 2, c.bottom + LINE);
    }
  }

  function countMax(values) {
    const top = Math.max(0, Math.max.apply(null, values.concat([0])));
    return Math.max(4, Math.ceil((top * 1.15) / 4) * 4);
  }

  // Legends side by side, wrapped onto further lines when they do not fit: each is
  // shown whole. Returns [{text, x, line}] and the number of lines.
  function layoutLegend(ctx, labels, width) {
    const placed = [];
    let x = 46;
    let line = 0;
    labels.forEach(function (text) {
      const w = ctx.measureText(text).width;
      if (x > 46 && x + w > width - 4) {
        line += 1;
        x = 46;
      }
      placed.push({ text: text, x: x, line: line });
      x += w + 12;
    });
    return { items: placed, lines: labels.length ? line + 1 : 0 };
  }

  // series: [{label, values: [number|null]}], x = sample index
  function lineChart(id, series, unit) {
    const canvas = $(id);
    if (!canvas) return;
    const c = prepare(canvas);
    let max = 0;
    series.forEach(function (s) {
      s.values.forEach(function (v) {
        if (v !== null && v > max) max = v;
      });
    });
    max = max > 0 ? max * 1.15 : 1;
    const legend = layoutLegend(
      c.ctx,
      series.map(function (s) {
        return s.label;
      }),
      c.w
    );
    c.top = 8;
    c.bottom = c.h - 4 - LINE * Math.max(1, legend.lines);
    axes(c, max, "", false);
    c.ctx.fillText(unit, 2, c.h - 2 - LINE * (Math.max(1, legend.lines) - 1));
    const n = HISTORY;
    series.forEach(function (s, k) {
      const ctx = c.ctx;
      ctx.strokeStyle = COLORS[k % COLORS.length];
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let started = false;
      const offset = n - s.values.length;
      s.values.forEach(function (v, i) {
        if (v === null) {
          started = false;
          return;
        }
        const x = 40 + ((c.w - 44) * (offset + i)) / (n - 1);
        const y = c.top + (c.bottom - c.top) * (1 - v / max);
        if (started) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        started = true;
      });
      ctx.stroke();
      ctx.fillStyle = COLORS[k % COLORS.length];
      const place = legend.items[k];
      ctx.fillText(place.text, place.x, c.bottom + LINE * (place.line + 1) - 2);
    });
  }

  function barChart(id, labels, values) {
    const canvas = $(id);
    if (!canvas) return;
    const c = prepare(canvas);
    const max = countMax(values); // counts of consultations: whole numbers on the axis
    const n = Math.max(1, values.length);
    const step = (c.w - 44) / n;
    const ctx = c.ctx;
    // every label is drawn: one that would touch its neighbour goes one line lower
    const rows = [];
    let lines = 1;
    const lineEnds = [];
    labels.forEach(function (label, i) {
      const width = ctx.measureText(label).width;
      // under its bar, but never past the right edge (the last one is the widest risk)
      const x = Math.max(0, Math.min(40 + i * step + step * 0.15, c.w - 2 - width));
      let line = 0;
      while (lineEnds[line] !== undefined && x < lineEnds[line]) {
        line += 1;
      }
      lineEnds[line] = x + width + 6;
      lines = Math.max(lines, line + 1);
      rows.push({ x: x, line: line });
    });
    c.top = 8;
    c.bottom = c.h - 4 - LINE * lines;
    axes(c, max, "", true);
    values.forEach(function (v, i) {
      const x = 40 + i * step + step * 0.15;
      const hgt = (c.bottom - c.top) * (v / max);
      ctx.fillStyle = COLORS[0];
      ctx.fillRect(x, c.bottom - hgt, step * 0.7, hgt);
      ctx.fillStyle = "#1b1f24";
      ctx.fillText(labels[i], rows[i].x, c.bottom + LINE * (rows[i].line + 1) - 2);
    });
  }

  function perDirection(field, scale) {
    // transcoded and passed through alike: a browser-to-browser call has no
    // transcoder, yet its frames and bits go through the gateway
    function rowsOf(s) {
      return s.transcoders.concat(s.passthrough || []);
    }
    const keys = {};
    samples.forEach(function (s) {
      rowsOf(s).forEach(function (r) {
        keys[r.direction + " " + r.kind] = true;
      });
    });
    return Object.keys(keys)
      .sort()
      .map(function (key) {
        return {
          label: t("ops.direction." + key.split(" ")[0]) + " (" + t("ops.kind." + key.split(" ")[1]) + ")",
          values: samples.map(function (s) {
            let sum = null;
            rowsOf(s).forEach(function (r) {
              if (r.direction + " " + r.kind === key) sum = (sum || 0) + r[field] * scale;
            });
            return sum;
          }),
        };
      });
  }

  function renderCharts() {
    lineChart("chart-fps", perDirection("fps", 1), "fps");
    lineChart("chart-bitrate", perDirection("bitrate", 1e-3), "kbit/s");
    const latencyKeys = {};
    samples.forEach(function (s) {
      Object.keys(s.latency || {}).forEach(function (k) {
        latencyKeys[k] = true;
      });
    });
    lineChart(
      "chart-latency",
      Object.keys(latencyKeys)
        .sort()
        .map(function (k) {
          const parts = k.split("/");
          return {
            label:
              t("ops.direction." + parts[0]) + " " + t("ops.kind." + parts[2]) + " " + t("ops.path." + parts[1]),
            values: samples.map(function (s) {
              const v = (s.latency || {})[k];
              return v === undefined ? null : v;
            }),
          };
        }),
      "ms p95"
    );
    lineChart(
      "chart-cpu",
      [
        {
          label: t("ops.summary.cpu"),
          values: samples.map(function (s) {
            return s.process.cpu_percent;
          }),
        },
      ],
      "%"
    );
  }

  const DURATION_KEYS = {
    "under 5 min": "ops.duration.under_5",
    "5-15 min": "ops.duration.5_15",
    "15-30 min": "ops.duration.15_30",
    "30-60 min": "ops.duration.30_60",
    "over 60 min": "ops.duration.over_60",
  };

  function renderStats() {
    if (!stats) return;
    const days = Object.keys(stats.per_day || {});
    barChart(
      "chart-per_day",
      days.map(function (d) {
        return d.slice(5);
      }),
      days.map(function (d) {
        return stats.per_day[d];
      })
    );
    const buckets = (stats.duration_s && stats.duration_s.buckets) || {};
    const bk = Object.keys(buckets);
    barChart(
      "chart-durations",
      bk.map(function (k) {
        // the statistics name their buckets in English ("5-15 min"); the page's language
        return DURATION_KEYS[k] ? t(DURATION_KEYS[k]) : k;
      }),
      bk.map(function (k) {
        return buckets[k];
      })
    );
    const clients = stats.clients || {};
    const ck = Object.keys(clients);
    barChart(
      "chart-clients",
      ck.map(function (k) {
        return t("ops.client." + k);
      }),
      ck.map(function (k) {
        return clients[k];
      })
    );
  }

  // -- feed ------------------------------------------------------------------------------
  function take(sample) {
    samples.push(sample);
    while (samples.length > HISTORY) samples.shift();
  }

  function renderAll() {
    const sample = samples[samples.length - 1];
    if (sample) {
      renderSummary(sample);
      renderTranscoders(sample);
      renderAlarms(sample);
    }
    renderConsultations();
    renderCharts();
    renderStats();
  }

  function connect() {
    const source = new EventSource("/api/ops/live");
    const state = $("ops-state");
    source.addEventListener("history", function (e) {
      JSON.parse(e.data).samples.forEach(take);
      VB.i18n.setText(state, "ops.connected");
      renderAll();
    });
    source.addEventListener("sample", function (e) {
      const data = JSON.parse(e.data);
      consultations = data.consultations;
      if (data.sample) take(data.sample);
      VB.i18n.setText(state, "ops.connected");
      renderAll();
    });
    source.onerror = function () {
      VB.i18n.setText(state, "ops.reconnecting"); // EventSource reconnects by itself
    };
  }

  async function loadStats() {
    try {
      const response = await fetch("/api/stats", { credentials: "same-origin" });
      if (response.ok) {
        stats = await response.json();
        renderStats();
      }
    } catch (e) {
      stats = null;
    }
  }

  // draining a node (cluster mode) stops it: ask first, as ending a consultation does
  document.querySelectorAll("form.drain-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(t("ops.cluster.drain_confirm"))) event.preventDefault();
    });
  });

  VB.i18n.onChange(renderAll);
  window.addEventListener("resize", renderAll);
  connect();
  loadStats();
  setInterval(loadStats, 60000);
})();
