// hearth's Markdown for model replies: a small subset (fenced code blocks, inline code, bold,
// emphasis, headings, lists, block quotes, links), built with createElement and textContent
// only. Model output is untrusted: nothing here parses HTML (no innerHTML, no insertAdjacentHTML),
// so "<img onerror=...>" stays text; a link becomes an anchor only for an absolute http(s) URL,
// any other target (javascript:, data:, relative) is shown as inert text.
"use strict";

(() => {
  const FENCE = /^\s{0,3}(```|~~~)\s*([A-Za-z0-9_+.#-]*)\s*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
  const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  // inline: code span | link (its URL may hold one level of parentheses) | **bold** | __bold__ |
  // *em* | _em_
  const INLINE = /`([^`\n]+)`|\[([^\]\n]+)\]\(\s*((?:[^()\s]|\([^()\s]*\))+)\s*\)|\*\*([^*\n]+)\*\*|__([^_\n]+)__|\*([^*\s][^*\n]*)\*|\b_([^_\s][^_\n]*)_\b/g;

  function node(tag, text) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The URL if it is an absolute http(s) URL, else null.
  function safeHref(raw) {
    if (!/^https?:\/\//i.test(raw)) return null;
    try {
      const url = new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  function inline(text, parent) {
    let last = 0;
    const re = new RegExp(INLINE.source, "g"); // one per call: the calls nest
    for (let m = re.exec(text); m !== null; m = re.exec(text)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      if (m[1] !== undefined) {
        parent.append(node("code", m[1]));
      } else if (m[2] !== undefined) {
        const href = safeHref(m[3]);
        if (href) {
          const a = node("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          a.referrerPolicy = "no-referrer";
          inline(m[2], a);
          parent.append(a);
        } else {
          const span = node("span");
          span.className = "inert-link";
          span.title = "link not followed: only http(s) links are";
          span.textContent = m[2] + " (" + m[3] + ")";
          parent.append(span);
        }
      } else if (m[4] !== undefined || m[5] !== undefined) {
        const strong = node("strong");
        inline(m[4] !== undefined ? m[4] : m[5], strong);
        parent.append(strong);
      } else {
        const em = node("em");
        inline(m[6] !== undefined ? m[6] : m[7], em);
        parent.append(em);
      }
      last = re.lastIndex;
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  // lines joined with <br>, each rendered inline
  function lines(list, parent) {
    list.forEach((line, i) => {
      if (i > 0) parent.append(node("br"));
      inline(line, parent);
    });
  }

  function render(text) {
    const out = document.createDocumentFragment();
    const src = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < src.length) {
      const line = src[i];
      let m;
      if ((m = FENCE.exec(line))) {
        const fence = m[1];
        const body = [];
        i += 1;
        while (i < src.length && src[i].trim() !== fence) body.push(src[i++]);
        i += 1; // the closing fence (absent while a reply is still streaming)
        const pre = node("pre");
        const code = node("code", body.join("\n"));
        if (m[2]) code.dataset.lang = m[2];
        pre.append(code);
        out.append(pre);
      } else if ((m = HEADING.exec(line))) {
        const h = node("h" + Math.min(6, m[1].length + 2));
        inline(m[2], h);
        out.append(h);
        i += 1;
      } else if (BULLET.test(line) || NUMBERED.test(line)) {
        const ordered = !BULLET.test(line);
        const pattern = ordered ? NUMBERED : BULLET;
        const list = node(ordered ? "ol" : "ul");
        if (ordered) {
          const start = parseInt(NUMBERED.exec(line)[1], 10);
          if (start !== 1) list.start = start;
        }
        while (i < src.length && (m = pattern.exec(src[i]))) {
          const li = node("li");
          inline(ordered ? m[2] : m[1], li);
          list.append(li);
          i += 1;
        }
        out.append(list);
      } else if (QUOTE.test(line)) {
        const quote = node("blockquote");
        const body = [];
        while (i < src.length && (m = QUOTE.exec(src[i]))) {
          body.push(m[1]);
          i += 1;
        }
        lines(body, quote);
        out.append(quote);
      } else if (line.trim() === "") {
        i += 1;
      } else {
        const body = [];
        while (i < src.length && src[i].trim() !== "" && !FENCE.test(src[i]) &&
               !HEADING.test(src[i]) && !BULLET.test(src[i]) && !NUMBERED.test(src[i]) &&
               !QUOTE.test(src[i])) {
          body.push(src[i]);
          i += 1;
        }
        const p = node("p");
        lines(body, p);
        out.append(p);
      }
    }
    return out;
  }

  window.hearthMarkdown = Object.freeze({render, safeHref});
})();
