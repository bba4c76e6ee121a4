// The playground: plain JavaScript, no dependencies, no build step. It calls the public API
// as any client would; every error is shown as the API words it.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const config = JSON.parse($("playground-config").textContent || "null") || { experiment: null };
  const KEY_STORAGE = "playground.apiKey";
  const state = {
    keyRequired: false,
    languages: [], // [{code, name, targets}] from /languages
    models: [], // translation model cards from /v1/models
    generators: [], // generation model cards
    lastTranslation: null,
    generation: null, // the AbortController of a running stream
  };

  // --- talking to the API -------------------------------------------------------------

  function apiKey() {
    return $("api-key").value.trim();
  }

  function headers(extra) {
    const all = { "Content-Type": "application/json", ...(extra || {}) };
    if (apiKey()) all.Authorization = `Bearer ${apiKey()}`;
    return all;
  }

  class ApiError extends Error {
    constructor(status, type, message, field) {
      super(message);
      this.status = status;
      this.type = type;
      this.field = field;
    }
  }

  // The API's error body ({"error": {type, message, field}}), LibreTranslate's ({"error": "..."})
  // or, from Serve's proxy, plain text.
  async function errorOf(response) {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "object" && body.error !== null) {
        return new ApiError(response.status, body.error.type, body.error.message, body.error.field);
      }
      if (body && typeof body.error === "string") {
        return new ApiError(response.status, null, body.error, null);
      }
    } catch (_) {
      // not JSON: shown as it came
    }
    return new ApiError(response.status, null, text || response.statusText, null);
  }

  async function call(method, path, body, extraHeaders) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: headers(extraHeaders),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ApiError(0, "network", `the service did not answer: ${error.message}`, null);
    }
    if (!response.ok) throw await errorOf(response);
    return { body: await response.json(), response };
  }

  function showError(element, error) {
    element.hidden = false;
    element.replaceChildren();
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = [error.status || "", error.type || ""].join(" ").trim();
    element.append(kind, document.createTextNode(error.message || String(error)));
    if (error.field) element.append(document.createTextNode(` (field: ${error.field})`));
  }

  function hide(...elements) {
    for (const element of elements) element.hidden = true;
  }

  function numberOrNull(id) {
    const value = $(id).value.trim();
    return value === "" ? null : Number(value);
  }

  function withoutNulls(object) {
    return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== null && v !== ""));
  }

  function ms(value) {
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} ms`;
  }

  function metaList(element, rows) {
    element.replaceChildren();
    for (const [term, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      element.append(dt, dd);
    }
  }

  function node(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  async function busy(button, status, label, work) {
    button.disabled = true;
    status.textContent = label;
    const started = performance.now();
    try {
      await work();
      status.textContent = `done in ${ms(performance.now() - started)}`;
    } catch (error) {
      status.textContent = "";
      throw error;
    } finally {
      button.disabled = false;
    }
  }

  // --- what is served -----------------------------------------------------------------

  function languageName(code) {
    const found = state.languages.find((l) => l.code === code);
    return found ? `${found.name} (${code})` : code;
  }

  function fillLanguages(sourceId, targetId, withAuto) {
    const source = $(sourceId);
    const target = $(targetId);
    const keepSource = source.value || "es";
    const keepTarget = target.value || "en";
    const sources = state.languages.filter((l) => l.targets.length > 0).map((l) => l.code);
    const targets = [...new Set(state.languages.flatMap((l) => l.targets))].sort();
    source.replaceChildren(
      ...(withAuto ? [new Option("Detect (auto)", "auto")] : []),
      ...sources.map((code) => new Option(languageName(code), code)),
    );
    target.replaceChildren(...targets.map((code) => new Option(languageName(code), code)));
    if ([...source.options].some((o) => o.value === keepSource)) source.value = keepSource;
    if ([...target.options].some((o) => o.value === keepTarget)) target.value = keepTarget;
  }

  function servesPair(model, source, target) {
    return (source === "auto" || model.source === source) && model.target === target;
  }

  function newestPerId(models) {
    const newest = new Map();
    for (const model of models) {
      const seen = newest.get(model.id);
      if (!seen || model.version > seen.version) newest.set(model.id, model);
    }
    return [...newest.values()];
  }

  function fillModels() {
    const select = $("t-model");
    const keep = select.value;
    const source = $("t-source").value;
    const target = $("t-target").value;
    const ids = newestPerId(state.models.filter((m) => servesPair(m, source, target)));
    select.replaceChildren(
      new Option("default", ""),
      ...ids.map((m) => new Option(`${m.id}${m.default ? " (default)" : ""}`, m.id)),
    );
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
    fillVersions();
  }

  function fillVersions() {
    const select = $("t-version");
    const versions = state.models
      .filter((m) => m.id === $("t-model").value)
      .map((m) => m.version)
      .sort((a, b) => b - a);
    select.replaceChildren(
      new Option("newest", ""),
      ...versions.map((v) => new Option(`v${v}`, String(v))),
    );
  }

  async function loadServed() {
    document.body.dataset.served = "loading";
    hide($("banner"));
    try {
      const { body } = await call("GET", "/v1/models");
      state.models = body.models.filter((m) => m.task === "translation");
      state.generators = body.models.filter((m) => m.task === "generation");
    } catch (error) {
      state.models = [];
      state.generators = [];
      showError($("banner"), error);
      $("banner").prepend(node("strong", null, "The served models could not be listed: "));
    }
    fillModels();
    const noLm = state.generators.length === 0;
    $("g-status").textContent = noLm ? "no language model is served here" : state.generators[0].id;
    document.body.dataset.served = "loaded";
  }

  async function start() {
    try {
      const settings = (await call("GET", "/frontend/settings")).body;
      state.keyRequired = Boolean(settings.keyRequired);
    } catch (error) {
      showError($("banner"), error);
    }
    $("key-bar").hidden = !state.keyRequired;
    $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
    try {
      state.languages = (await call("GET", "/languages")).body;
    } catch (error) {
      showError($("banner"), error);
    }
    fillLanguages("t-source", "t-target", true);
    fillLanguages("c-source", "c-target", false);
    fillLanguages("a-source", "a-target", false);
    await loadServed();
    document.body.dataset.ready = "true";
  }

  // --- views --------------------------------------------------------------------------

  const VIEWS = ["translate", "compare", "attention", "generate", "feedback"];

  function showView() {
    const wanted = location.hash.replace("#", "");
    const view = VIEWS.includes(wanted) ? wanted : "translate";
    for (const name of VIEWS) $(`view-${name}`).hidden = name !== view;
    for (const tab of document.querySelectorAll("#tabs a")) {
      tab.classList.toggle("active", tab.dataset.view === view);
    }
    if (view === "feedback") showFeedbackContext();
  }

  // Translate.

  async function translate() {
    hide($("t-error"), $("t-result"));
    const source = $("t-source").value;
    const request = withoutNulls({
      text: $("t-text").value,
      source,
      target: $("t-target").value,
      model: $("t-model").value,
      version: numberOrNull("t-version"),
      beam_size: numberOrNull("t-beam"),
      n_best: numberOrNull("t-nbest"),
      return_scores: true,
    });
    await busy($("t-go"), $("t-status"), "translating…", async () => {
      const { body } = await call("POST", "/v1/translate", request);
      const [result] = body.translations;
      $("t-output").textContent = result.text;
      const detected = result.detected_language;
      metaList($("t-meta"), [
        ["model", `${body.model} v${body.version} (${body.source}→${body.target})`],
        ["score", result.score === null ? null : result.score.toFixed(3)],
        ["detected", detected ? `${detected.language} (${detected.confidence.toFixed(0)}%)` : null],
        ["sentences", result.sentences],
        ["tokens", `${result.input_tokens} in, ${result.output_tokens} out`],
        [
          "timing",
          `${ms(body.timing.total_ms)} total: ${ms(body.timing.queue_ms)} queued, ` +
            `${ms(body.timing.compute_ms)} decoding, batch of ${body.timing.batch_sizes[0]}` +
            (body.timing.cached_sentences[0] ? `, ${body.timing.cached_sentences[0]} cached` : ""),
        ],
        ["A/B", body.experiment ? `${body.experiment}: ${body.variant}` : null],
        ["request id", body.id],
      ]);
      const alternatives = $("t-alternatives");
      alternatives.replaceChildren();
      for (const alternative of result.alternatives || []) {
        const item = node("li", null, alternative.text);
        if (alternative.score !== null) {
          item.append(node("span", "score", alternative.score.toFixed(3)));
        }
        alternatives.append(item);
      }
      if (!alternatives.children.length) {
        alternatives.append(node("li", "hint", "none (n-best 1, or no other hypothesis)"));
      }
      $("t-result").hidden = false;
      state.lastTranslation = {
        id: body.id,
        source: request.text,
        text: result.text,
        model: `${body.model} v${body.version}`,
      };
      $("f-id").value = body.id;
    });
  }

  // Compare.

  function compareColumn(result, slowest) {
    const column = node("div", result.error ? "column failed" : "column");
    column.append(node("h4", null, `${result.model} v${result.version}`));
    column.append(node("div", "arch", `${result.arch}, ${result.source}→${result.target}`));
    if (result.error) {
      const error = node("div", "error");
      showError(error, { type: result.error.type, message: result.error.message, field: result.error.field });
      column.append(error);
    } else {
      column.append(node("div", "text", result.translations.map((t) => t.text).join("\n")));
      const score = result.translations[0].score;
      if (score !== null) column.append(node("div", "hint", `score ${score.toFixed(3)}`));
    }
    column.append(node("div", "latency", ms(result.latency_ms)));
    const bar = node("div", "bar");
    const fill = node("span");
    fill.style.width = `${Math.max(2, (100 * result.latency_ms) / slowest)}%`;
    bar.append(fill);
    column.append(bar);
    return column;
  }

  async function abVariant(text, source, target, beam) {
    const box = $("c-variant");
    box.hidden = false;
    const experiment = config.experiment;
    if (!experiment) {
      const fallback = state.models.find((m) => m.default) || state.models[0];
      box.textContent =
        "No A/B experiment splits /v1/translate here (they are off in the config), so every " +
        `request that names no model goes to ${fallback ? fallback.id : "the default model"}.`;
      return;
    }
    const user = $("c-user").value.trim();
    const extra = user ? { [experiment.header]: user } : {};
    const { body } = await call(
      "POST",
      "/v1/translate",
      withoutNulls({ text, source, target, beam_size: beam }),
      extra,
    );
    box.replaceChildren();
    const who = user ? `User “${user}” (${experiment.header})` : "A request without a user id";
    if (!body.variant) {
      box.textContent = `${who} is outside experiment ${experiment.name} for this pair; ${body.model} v${body.version} answered.`;
      return;
    }
    const shares = experiment.variants.map((v) => v.name).join(" / ");
    box.append(
      node("strong", null, `${who} gets variant ${body.variant}`),
      document.createTextNode(
        ` of experiment ${body.experiment} (${shares}${user ? "" : ", drawn at random"}): ` +
          `${body.model} v${body.version} answered “${body.translations[0].text}”.`,
      ),
    );
  }

  async function compare() {
    hide($("c-error"), $("c-variant"));
    $("c-columns").replaceChildren();
    const text = $("c-text").value;
    const source = $("c-source").value;
    const target = $("c-target").value;
    const beam = numberOrNull("c-beam");
    await busy($("c-go"), $("c-status"), "translating with every model…", async () => {
      const { body } = await call(
        "POST",
        "/v1/compare",
        withoutNulls({ text, source, target, beam_size: beam, return_scores: true }),
      );
      const slowest = Math.max(...body.results.map((r) => r.latency_ms), 1);
      $("c-columns").replaceChildren(...body.results.map((r) => compareColumn(r, slowest)));
      await abVariant(text, source, target, beam);
    });
  }

  // Attention.

  const CELL_MIN = 14;
  const CELL_MAX = 28;
  const GRID_WIDTH = 400; // CSS pixels for the cells: two maps fit side by side
  const LABEL_FONT = "13px system-ui, -apple-system, 'DejaVu Sans', sans-serif";

  // One cross-attention matrix as a grey-scale grid: source tokens across the top, target
  // tokens down the left, cell brightness the weight (black 0, white 1).
  function drawHeatmap(canvas, alignment) {
    const { source_tokens: across, target_tokens: down, weights } = alignment;
    const context = canvas.getContext("2d");
    context.font = LABEL_FONT;
    const width = (labels) => Math.max(0, ...labels.map((t) => context.measureText(t).width));
    const cell = Math.max(CELL_MIN, Math.min(CELL_MAX, Math.floor(GRID_WIDTH / Math.max(across.length, 1))));
    const left = Math.ceil(width(down)) + 12;
    const top = Math.ceil(width(across) * Math.sin(Math.PI / 3)) + 16;
    const cssWidth = left + cell * across.length + 16;
    const cssHeight = top + cell * down.length + 4;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.ceil(cssWidth * ratio);
    canvas.height = Math.ceil(cssHeight * ratio);
    canvas.style.width = `${cssWidth}px`;
    canvas.style.height = `${cssHeight}px`;
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, cssWidth, cssHeight);
    weights.forEach((row, i) => {
      row.forEach((weight, j) => {
        const grey = Math.round(255 * Math.min(1, Math.max(0, weight)));
        context.fillStyle = `rgb(${grey},${grey},${grey})`;
        context.fillRect(left + j * cell, top + i * cell, cell, cell);
      });
    });
    context.fillStyle = "#1d232b";
    context.font = LABEL_FONT;
    context.textBaseline = "middle";
    context.textAlign = "right";
    down.forEach((token, i) => context.fillText(token, left - 6, top + i * cell + cell / 2));
    context.textAlign = "left";
    across.forEach((token, j) => {
      context.save();
      context.translate(left + j * cell + cell / 2, top - 6);
      context.rotate(-Math.PI / 3);
      context.fillText(token, 0, 0);
      context.restore();
    });
    Object.assign(canvas.dataset, { left, top, cell, rows: down.length, columns: across.length });
    canvas.onmousemove = (event) => {
      const box = canvas.getBoundingClientRect();
      const j = Math.floor((event.clientX - box.left - left) / cell);
      const i = Math.floor((event.clientY - box.top - top) / cell);
      canvas.title =
        i >= 0 && j >= 0 && i < down.length && j < across.length
          ? `${down[i]} ← ${across[j]}: ${weights[i][j].toFixed(3)}`
          : "";
    };
  }

  async function attention() {
    hide($("a-error"));
    $("a-maps").replaceChildren();
    const text = $("a-text").value;
    const source = $("a-source").value;
    const target = $("a-target").value;
    const models = newestPerId(state.models.filter((m) => servesPair(m, source, target)));
    if (!models.length) {
      throw new ApiError(0, null, `no served model translates ${source}→${target}`, null);
    }
    await busy($("a-go"), $("a-status"), "aligning…", async () => {
      const answers = await Promise.all(
        models.map((m) =>
          call(
            "POST",
            "/v1/translate",
            withoutNulls({
              text,
              source,
              target,
              model: m.id,
              beam_size: numberOrNull("a-beam"),
              return_alignment: true,
            }),
          ),
        ),
      );
      answers.forEach(({ body }, index) => {
        const result = body.translations[0];
        const alignments = result.alignment
          ? [result.alignment]
          : (result.segments || []).map((s) => s.alignment).filter(Boolean);
        const box = node("figure", "map");
        box.dataset.model = body.model;
        box.append(node("h4", null, `${body.model} v${body.version} (${models[index].arch})`));
        box.append(node("p", "caption", result.text));
        $("a-maps").append(box);
        for (const alignment of alignments) {
          const canvas = document.createElement("canvas");
          box.append(canvas);
          drawHeatmap(canvas, alignment);
        }
      });
    });
  }

  // Generate: Server-Sent Events read from fetch's ReadableStream, so the key header goes too.

  async function generate() {
    hide($("g-error"));
    const output = $("g-text");
    output.textContent = "";
    output.dataset.events = "0";
    $("g-prompt-echo").textContent = $("g-prompt").value;
    $("g-meta").replaceChildren();
    const controller = new AbortController();
    state.generation = controller;
    $("g-go").disabled = true;
    $("g-stop").disabled = false;
    $("g-status").textContent = "generating…";
    const started = performance.now();
    let firstToken = null;
    let events = 0;
    let last = null;
    try {
      const response = await fetch("/v1/generate", {
        method: "POST",
        headers: headers({ Accept: "text/event-stream" }),
        body: JSON.stringify(
          withoutNulls({
            prompt: $("g-prompt").value,
            max_new_tokens: numberOrNull("g-max"),
            temperature: numberOrNull("g-temp"),
            top_p: numberOrNull("g-topp"),
            seed: numberOrNull("g-seed"),
            stream: true,
          }),
        ),
        signal: controller.signal,
      });
      if (!response.ok) throw await errorOf(response);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let done = false;
      while (!done) {
        const chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        let end;
        while (!done && (end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = frame
            .split("\n")
            .filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart())
            .join("\n");
          if (data === "[DONE]") {
            done = true;
            break;
          }
          if (!data) continue;
          const event = JSON.parse(data);
          if (event.error) {
            throw new ApiError(response.status, event.error.type, event.error.message, event.error.field);
          }
          if (event.text) {
            firstToken = firstToken ?? performance.now() - started;
            output.textContent += event.text;
          }
          events += 1;
          output.dataset.events = String(events);
          last = event;
        }
      }
      const elapsed = performance.now() - started;
      const usage = last && last.usage;
      metaList($("g-meta"), [
        ["model", last ? last.model : null],
        ["finished", last ? last.finish_reason : null],
        ["tokens", usage ? `${usage.prompt_tokens} prompt, ${usage.completion_tokens} generated` : null],
        ["first token", firstToken === null ? null : ms(firstToken)],
        ["events", events],
        ["speed", usage ? `${((1000 * usage.completion_tokens) / elapsed).toFixed(1)} tokens/s` : null],
      ]);
      $("g-status").textContent = `done in ${ms(elapsed)}`;
    } catch (error) {
      if (error.name === "AbortError") {
        $("g-status").textContent = "stopped";
      } else {
        $("g-status").textContent = "";
        showError($("g-error"), error);
      }
    } finally {
      state.generation = null;
      $("g-go").disabled = false;
      $("g-stop").disabled = true;
    }
  }

  // Feedback.

  function showFeedbackContext() {
    const last = state.lastTranslation;
    const box = $("f-context");
    if (!last || $("f-id").value.trim() !== last.id) {
      box.hidden = true;
      return;
    }
    box.replaceChildren(node("div", "source", last.source), node("div", null, `→ ${last.text}`));
    box.append(node("div", "hint", last.model));
    box.hidden = false;
  }

  async function feedback() {
    hide($("f-error"), $("f-result"));
    const rating = document.querySelector("input[name=f-rating]:checked");
    await busy($("f-go"), $("f-status"), "sending…", async () => {
      const { body } = await call(
        "POST",
        "/v1/feedback",
        withoutNulls({
          request_id: $("f-id").value.trim(),
          rating: rating ? Number(rating.value) : null,
          comment: $("f-comment").value.trim(),
        }),
      );
      const variant = body.variant ? ` (experiment ${body.experiment}, variant ${body.variant})` : "";
      $("f-result").textContent =
        `Thank you: rating ${body.rating} recorded for ${body.model} v${body.version}${variant}.`;
      $("f-result").hidden = false;
    });
  }

  // --- wiring -------------------------------------------------------------------------

  function on(buttonId, errorId, action) {
    $(buttonId).addEventListener("click", () =>
      action().catch((error) => showError($(errorId), error)),
    );
  }

  on("t-go", "t-error", translate);
  on("c-go", "c-error", compare);
  on("a-go", "a-error", attention);
  $("g-go").addEventListener("click", generate);
  $("g-stop").addEventListener("click", () => state.generation && state.generation.abort());
  on("f-go", "f-error", feedback);
  $("t-source").addEventListener("change", fillModels);
  $("t-target").addEventListener("change", fillModels);
  $("t-model").addEventListener("change", fillVersions);
  $("f-id").addEventListener("input", showFeedbackContext);
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, apiKey());
    loadServed();
  });
  window.addEventListener("hashchange", showView);
  showView();
  start();
})();
