// hearth's web page: the API reference view, built from the server's OpenAPI document with
// ready-to-copy curl and Python (official openai SDK) examples for this server. The key is the
// placeholder $HEARTH_API_KEY. Everything is inserted as text (createElement/textContent).
"use strict";

(() => {
  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function exampleBody(path, model) {
    if (path.endsWith("/chat/completions")) {
      return {model, messages: [{role: "user", content: "Hello!"}]};
    }
    if (path.endsWith("/completions")) return {model, prompt: "Once upon a time", max_tokens: 32};
    if (path.endsWith("/embeddings")) return {model, input: "The food was delicious."};
    if (path.endsWith("/responses")) return {model, input: "Hello!"};
    if (path.endsWith("/messages")) {
      return {model, max_tokens: 256, messages: [{role: "user", content: "Hello!"}]};
    }
    return {model};
  }

  // A JSON value as a Python literal.
  function pyLiteral(value) {
    if (Array.isArray(value)) return "[" + value.map(pyLiteral).join(", ") + "]";
    if (value && typeof value === "object") {
      const items = Object.entries(value).map(([k, v]) => JSON.stringify(k) + ": " + pyLiteral(v));
      return "{" + items.join(", ") + "}";
    }
    if (value === true) return "True";
    if (value === false) return "False";
    if (value === null) return "None";
    return JSON.stringify(value);
  }

  function pyKwargs(body) {
    return Object.entries(body).map(([k, v]) => "    " + k + "=" + pyLiteral(v) + ",").join("\n");
  }

  // ``value`` as one POSIX shell word: single-quoted, each ' written as '\'' (no expansion).
  function shellQuote(value) {
    return "'" + String(value).replace(/'/g, "'\\''") + "'";
  }

  // {curl, python} for one operation, for the server at origin + prefix and ``model``.
  function examples(method, path, op, model, origin, prefix) {
    const m = method.toUpperCase();
    // the model id is a path segment: URL-encoded there, and every value in curl is quoted
    const url = origin + path.replace("{model}", encodeURIComponent(model));
    const needsKey = !(op.security && op.security.length === 0);
    const curl = ["curl " + (m === "GET" ? "" : "-X " + m + " ") + shellQuote(url)];
    if (needsKey) curl.push('  -H "Authorization: Bearer $HEARTH_API_KEY"');
    let py = "from openai import OpenAI\n\nclient = OpenAI(base_url=" + JSON.stringify(origin + prefix) +
             ', api_key=os.environ["HEARTH_API_KEY"])\n';
    py = "import os\n\n" + py;
    const rel = path.startsWith(prefix) ? path.slice(prefix.length) : null;
    if (op.requestBody) {
      const body = exampleBody(path, model);
      curl.push('  -H "Content-Type: application/json"');
      curl.push("  -d " + shellQuote(JSON.stringify(body)));
      const call = {"/chat/completions": "client.chat.completions.create",
                    "/completions": "client.completions.create",
                    "/embeddings": "client.embeddings.create",
                    "/responses": "client.responses.create"}[rel];
      if (call) {
        py += "response = " + call + "(\n" + pyKwargs(body) + "\n)\nprint(response)";
      } else {
        py += "response = client.post(" + JSON.stringify(rel || path) + ", body=" +
              pyLiteral(body) + ", cast_to=object)\nprint(response)";
      }
    } else if (rel === "/models") {
      py += "for model in client.models.list():\n    print(model.id)";
    } else if (rel === "/models/{model}") {
      py += "print(client.models.retrieve(" + JSON.stringify(model) + "))";
    } else if (rel !== null) {
      py += "print(client." + (m === "DELETE" ? "delete" : "get") + "(" + JSON.stringify(rel) +
            ", cast_to=object))";
    } else {
      // outside the API prefix: not an OpenAI resource, so plain HTTP
      py = "import os\n\nimport httpx\n\nresponse = httpx.get(" + JSON.stringify(url) +
           (needsKey ? ', headers={"Authorization": "Bearer " + os.environ["HEARTH_API_KEY"]}' : "") +
           ")\nprint(response.text)";
    }
    return {curl: curl.join(" \\\n"), python: py};
  }

  function codeBlock(title, text) {
    const wrap = el("div", null, "example");
    const head = el("div", null, "example-head");
    head.append(el("span", title));
    const copy = el("button", "Copy");
    copy.type = "button";
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = "Copied";
      } catch (_) {
        copy.textContent = "Select and copy";
      }
      setTimeout(() => { copy.textContent = "Copy"; }, 1500);
    });
    head.append(copy);
    wrap.append(head);
    const pre = el("pre");
    pre.append(el("code", text));
    wrap.append(pre);
    return wrap;
  }

  // One section per operation of ``doc`` (an OpenAPI document): method, path, summary, the
  // answer statuses, a curl and a Python example. ``where``: {origin, prefix, model}.
  function render(doc, where) {
    const out = document.createDocumentFragment();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const [method, op] of Object.entries(item)) {
        const section = el("section", null, "endpoint");
        section.dataset.path = path;
        const h = el("h3");
        h.append(el("span", method.toUpperCase(), "method"), " ", el("code", path));
        section.append(h);
        if (op.summary) section.append(el("p", op.summary));
        const statuses = Object.keys(op.responses || {}).join(", ");
        if (statuses) section.append(el("p", "Answers: " + statuses, "statuses"));
        const ex = examples(method, path, op, where.model, where.origin, where.prefix);
        section.append(codeBlock("curl", ex.curl), codeBlock("Python (openai SDK)", ex.python));
        out.append(section);
      }
    }
    return out;
  }

  window.hearthReference = Object.freeze({render});
})();
