// Live logs of a run page: each <pre data-live> follows its container's log through Server-Sent Events.
// Lines are added as text (never as HTML); the stream's "end" event closes it.
"use strict";
const KEEP_LINES = 20000;

function follow(pre) {
  const state = document.getElementById(pre.dataset.state);
  const source = new EventSource(pre.dataset.live);
  let lines = 0;
  source.onopen = () => { state.textContent = pre.dataset.finished === "true" ? "loading" : "live"; };
  source.onmessage = (event) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(event.data + "\n"));
    lines += 1;
    if (lines > KEEP_LINES) { pre.removeChild(pre.firstChild); }
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  };
  source.addEventListener("end", (event) => {
    source.close();
    state.textContent = event.data || "ended";
  });
  source.onerror = () => {
    source.close();
    state.textContent = "stream interrupted: reload the page to see the rest";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("pre[data-live]").forEach(follow);
});
