(function () {
  "use strict";

  /* Helpers */

  var $ = function (selector, root) {
    return (root || document).querySelector(selector);
  };
  var $$ = function (selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  };

  var range = document.body.dataset.range || "1h";
  var connBadge = $("#conn");

  function csrfToken() {
    var meta = $("meta[name=csrf]");
    return meta ? meta.content : "";
  }

  // The same wording as fmtDur (page.go), so a refreshed age reads like a rendered one.
  function formatDuration(ms) {
    var seconds = Math.max(0, Math.floor(ms / 1000));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h " + String(minutes % 60).padStart(2, "0") + " min";
    return Math.floor(hours / 24) + " d " + (hours % 24) + " h";
  }

  // Every [data-since] shows how long ago its timestamp was; kept current between refreshes.
  function updateAges() {
    var now = Date.now();
    $$("[data-since]").forEach(function (el) {
      var since = Date.parse(el.dataset.since);
      if (!isNaN(since)) el.textContent = formatDuration(now - since);
    });
  }

  // One error toast at a time; a new message replaces the old one and restarts its timeout.
  var errorTimer;
  function showError(msg) {
    var box = $("#err");
    if (!box) {
      box = document.createElement("div");
      box.id = "err";
      box.setAttribute("role", "alert");
      document.body.appendChild(box);
    }
    box.textContent = msg;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(function () {
      box.remove();
    }, 8000);
  }

  /* Live part: re-rendered by the server (one renderer, no template twin in JS). */

  var fetching = false;  // a fetch of the live part is under way
  var fetchAgain = false; // something changed while it was: fetch once more when it ends
  var refreshTimer = null;
  var refreshDue = 0;     // when refreshTimer fires, ms since the epoch

  function refresh() {
    if (fetching) {
      fetchAgain = true;
      return;
    }
    fetching = true;
    fetch("/?part=live", { cache: "no-store", credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) throw new Error(resp.status);
        return resp.text();
      })
      .then(function (html) {
        // Keep the operator's open/closed <details> across the swap.
        var wasOpen = {};
        $$("#live details[data-k]").forEach(function (d) {
          wasOpen[d.dataset.k] = d.open;
        });
        $("#live").innerHTML = html;
        $$("#live details[data-k]").forEach(function (d) {
          if (d.dataset.k in wasOpen) d.open = wasOpen[d.dataset.k];
        });
        updateAges();
        // The tab title starts with the banner's level, so a background tab shows it.
        var title = $("#banner .title");
        if (title) document.title = title.textContent + document.title.replace(/^[^·]*/, " ");
      })
      .catch(function () {})
      .then(function () {
        fetching = false;
        if (fetchAgain) {
          fetchAgain = false;
          refresh();
        }
      });
  }

  // Refresh within ms; an earlier pending refresh is kept, a later one is brought forward.
  function refreshSoon(ms) {
    var at = Date.now() + ms;
    if (refreshTimer && refreshDue <= at) return;
    clearTimeout(refreshTimer);
    refreshDue = at;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      refresh();
    }, ms);
  }

  /* Server-sent events */

  var events;
  var lost = false; // the connection dropped: whatever happened meanwhile was missed

  function connect() {
    events = new EventSource("/events");
    events.onopen = function () {
      connBadge.textContent = "live";
      connBadge.className = "conn on";
      if (lost) {
        lost = false;
        refresh();
        drawCharts();
      }
    };
    events.onerror = function () {
      connBadge.textContent = "reconnecting…";
      connBadge.className = "conn off";
      lost = true;
      // EventSource retries by itself unless it gave up (CLOSED): then start over.
      if (events.readyState === 2) {
        setTimeout(connect, 3000);
      }
    };
    // Readings come often: batch them; incidents, states and relays show at once.
    events.addEventListener("reading", function () {
      refreshSoon(2000);
    });
    ["incident", "state", "relay"].forEach(function (type) {
      events.addEventListener(type, function () {
        refreshSoon(100);
      });
    });
  }

  if (window.EventSource) connect();

  /* Action forms (acknowledge, relay override): posted in the background. */

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList.contains("act")) return;
    e.preventDefault();
    // The submitter carries the clicked button's name/value (which relay state was chosen).
    var body = new URLSearchParams(new FormData(form, e.submitter || null));
    $$("button", form).forEach(function (b) {
      b.disabled = true;
    });
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "X-CSRF-Token": csrfToken(),
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded"
      },
      body: body
    })
      .then(function (resp) {
        if (resp.status === 401) {
          location.href = "/login?next=/";
          return;
        }
        return resp.json()
          .catch(function () {
            return {};
          })
          .then(function (reply) {
            if (!resp.ok) showError((reply && reply.error) || ("failed: " + resp.status));
          });
      })
      .catch(function (x) {
        showError("failed: " + x);
      })
      // The refreshed live part brings the buttons back.
      .then(refresh);
  });

  /* Charts: the same geometry as chart.go. */

  var PLOT_W = 296; // chartW less room for the newest point's dot
  var TOP = 12;     // room for the max label
  var BOTTOM = 88;  // room for the min label

  function formatNumber(v) {
    var abs = Math.abs(v);
    if (abs >= 1000 || v === Math.trunc(v)) return v.toFixed(0);
    if (abs >= 100) return v.toFixed(1);
    return String(Math.round(v * 100) / 100);
  }

  function escapeHTML(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c];
    });
  }

  function drawChart(fig, points) {
    var svg = $("svg", fig);
    var span = range === "24h" ? 864e5 : 36e5;
    var now = Date.now();
    var start = now - span;
    var thresholds = JSON.parse(fig.dataset.th || "[]");
    var lo = Infinity;
    var hi = -Infinity;

    points = points.map(function (p) {
      return { t: Date.parse(p.ts), v: p.value };
    });
    points.forEach(function (p) {
      lo = Math.min(lo, p.v);
      hi = Math.max(hi, p.v);
    });
    if (!points.length) {
      svg.innerHTML = '<text x="150" y="54" text-anchor="middle" class="ax">no data yet</text>';
      return;
    }

    // A threshold far from the data would squash the line flat: include it only within reach.
    thresholds.forEach(function (th) {
      var reach = Math.max((hi - lo) / 2, Math.abs(hi) * 0.2);
      if (th.v >= lo - reach && th.v <= hi + reach) {
        lo = Math.min(lo, th.v);
        hi = Math.max(hi, th.v);
      }
    });
    // A contact or relay: off and on.
    if (lo >= 0 && hi <= 1) {
      lo = 0;
      hi = 1;
    }
    // A steady value must look steady, not like float rounding blown up to a jump.
    var minSpan = Math.max(Math.abs(hi + lo) / 2 * 0.02, 1);
    if (hi - lo < minSpan) {
      var mid = (hi + lo) / 2;
      lo = mid - minSpan / 2;
      hi = mid + minSpan / 2;
    }
    var pad = (hi - lo) * 0.08;
    lo -= pad;
    hi += pad;

    function y(v) {
      return BOTTOM - (v - lo) / (hi - lo) * (BOTTOM - TOP);
    }
    function x(t) {
      return (t - start) / span * PLOT_W;
    }

    // Points are averaged per two-pixel column; a gap longer than maxGap is a hole in the
    // data (a device that did not answer), left blank rather than bridged.
    var maxGap = Math.max(span / 48, 150e3);
    var path = "";
    var prevT = 0;
    var column = -1;
    var count = 0;
    var sum = 0;
    var columnT = 0;
    var move = true;

    function flush(moveTo) {
      if (!count) return;
      path += (moveTo || !path ? "M" : "L") + x(columnT).toFixed(1) + " " + y(sum / count).toFixed(1);
      count = 0;
      sum = 0;
    }

    points.forEach(function (p) {
      if (p.t < start) return;
      var c = Math.floor(x(p.t) / 2);
      if (prevT && p.t - prevT > maxGap) {
        flush(move);
        move = true;
      } else if (c !== column) {
        flush(move);
        move = false;
      }
      if (!count) columnT = p.t;
      column = c;
      count++;
      sum += p.v;
      prevT = p.t;
    });
    flush(move);

    var html = "";
    thresholds.forEach(function (th) {
      if (th.v < lo || th.v > hi) return;
      var ty = y(th.v).toFixed(1);
      html += '<line class="th ' + escapeHTML(th.l) + '" x1="0" x2="300" y1="' + ty + '" y2="' + ty + '"/>' +
        '<text class="tl ' + escapeHTML(th.l) + '" x="298" y="' + ty + '" dy="-2" text-anchor="end">' + escapeHTML(th.t) + "</text>";
    });
    var lastPoint = points[points.length - 1];
    html += '<path class="ln" d="' + path + '"/>' +
      (lastPoint.t >= start ? '<circle class="dot" cx="' + x(lastPoint.t).toFixed(1) + '" cy="' + y(lastPoint.v).toFixed(1) + '" r="2.5"/>' : "") +
      '<text class="ax" x="2" y="9">' + formatNumber(hi - pad) + "</text>" +
      '<text class="ax" x="2" y="98">' + formatNumber(lo + pad) + "</text>";
    svg.innerHTML = html;

    var last = $(".last", fig);
    if (last && points.length) {
      var unit = $(".sub", fig);
      last.textContent = formatNumber(points[points.length - 1].v) + (unit && unit.textContent ? " " + unit.textContent : "");
    }
  }

  function drawCharts() {
    $$("figure.chart").forEach(function (fig) {
      fetch("/api/v1/history?device=" + encodeURIComponent(fig.dataset.device) +
        "&metric=" + encodeURIComponent(fig.dataset.metric) +
        "&since=" + range, { cache: "no-store", credentials: "same-origin" })
        .then(function (resp) {
          if (!resp.ok) throw new Error(resp.status);
          return resp.json();
        })
        .then(function (points) {
          drawChart(fig, points);
        })
        .catch(function () {});
    });
  }

  // 1 h / 24 h without reloading the page; the URL keeps the choice for a reload.
  $$(".range a").forEach(function (link) {
    link.addEventListener("click", function (e) {
      e.preventDefault();
      range = link.dataset.range;
      document.body.dataset.range = range;
      $$(".range a").forEach(function (other) {
        other.classList.toggle("sel", other === link);
      });
      history.replaceState(null, "", "?range=" + range);
      drawCharts();
    });
  });

  /* Timers */

  // A 24 h chart moves one point per ten minutes: no need to fetch it every minute.
  var minutes = 0;
  setInterval(function () {
    minutes++;
    if (range !== "24h" || minutes % 5 === 0) drawCharts();
  }, 60000);
  setInterval(updateAges, 15000);
})();
