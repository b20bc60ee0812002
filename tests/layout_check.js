// What a person would call clipped or overflowing text, measured in the page (tests/test_browser_layout.py).
// Called as page.evaluate(CHECK_JS, [scopes, selectors]); returns one sentence per problem, naming the element.
// For each visible key element (matching `selectors`, inside one of `scopes`) that has text:
//  - its text is wider than its box (scrollWidth > clientWidth), or taller where the box hides overflow;
//  - an ancestor that hides overflow cuts it off, or it is off the screen (unless it sits in an area
//    the person can scroll, such as a wide table);
//  - a word is broken across two lines ("tot / al_ste / ps");
//  - an upload box's label covers the box's icon or text.
([scopes, selectors]) => {
  const tol = 1;
  const problems = [];
  const words = /[\p{L}\p{N}_]{2,}/gu;
  const quote = (el) => (el.innerText || el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 50);
  const describe = (el) => {
    const host = el.closest("[id]");
    const tid = el.getAttribute("data-testid");
    const where = host && host !== el ? `#${host.id} ` : "";
    return `${where}${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${tid ? `[data-testid=${tid}]` : ""} "${quote(el)}"`;
  };
  const shown = (el) => el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
    && el.getClientRects().length > 0 && !el.closest("svg, .sr-only, [aria-hidden=true], .hide, .hidden");
  const scrolls = (s) => /(auto|scroll)/.test(s.overflowX + s.overflowY);
  const hides = (s) => /(hidden|clip)/.test(s.overflowX + s.overflowY);
  const inside = (r, box) => r.left >= box.left - tol && r.right <= box.right + tol && r.top >= box.top - tol
    && r.bottom <= box.bottom + tol;
  const overlap = (a, b) => Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left))
    * Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));

  const fits = (el, s) => {
    if (!scrolls(s) && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + tol) {
      problems.push(`${describe(el)}: the text is wider than its box (${el.scrollWidth} > ${el.clientWidth} px)`);
    }
    if (hides(s) && el.clientHeight > 0 && el.scrollHeight > el.clientHeight + tol) {
      problems.push(`${describe(el)}: the text is taller than its box (${el.scrollHeight} > ${el.clientHeight} px)`);
    }
  };
  const notCut = (el, r) => {
    let scrollable = false;
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const s = getComputedStyle(a);
      if (scrolls(s)) { scrollable = true; break; }  // the person can scroll to it
      if (hides(s) && !inside(r, a.getBoundingClientRect())) {
        problems.push(`${describe(el)}: cut off by ${describe(a)}`);
        return;
      }
    }
    if (!scrollable && (r.left < -tol || r.right > innerWidth + tol)) {
      problems.push(`${describe(el)}: off the screen (${Math.round(r.left)}..${Math.round(r.right)} px of ${innerWidth})`);
    }
  };
  const wordsWhole = (el) => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      if (!n.parentElement || !shown(n.parentElement)) continue;
      for (const m of n.textContent.matchAll(words)) {
        const range = document.createRange();
        range.setStart(n, m.index);
        range.setEnd(n, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter((q) => q.width > 0).map((q) => Math.round(q.top)));
        if (tops.size > 1) {
          problems.push(`${describe(el)}: the word "${m[0]}" is broken across lines`);
          return;
        }
      }
    }
  };
  const labelClear = (label) => {
    const block = label.closest(".block");
    const text = block && block.querySelector("[data-testid=upload-text]");
    if (!text || !shown(text)) return;
    const lr = label.getBoundingClientRect();
    const parts = [...text.querySelectorAll("[data-testid=upload-icon], .or")].filter(shown);
    const rects = parts.map((p) => [p.getBoundingClientRect(), describe(p)]);
    for (const n of text.childNodes) {
      if (n.nodeType !== 3 || !n.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      for (const q of range.getClientRects()) rects.push([q, `"${n.textContent.trim()}"`]);
    }
    for (const [r, what] of rects) {
      if (overlap(lr, r) > 2) problems.push(`${describe(label)}: the label covers ${what}`);
    }
  };

  const roots = scopes.flatMap((s) => [...document.querySelectorAll(s)]);
  const seen = new Set();
  for (const root of roots) {
    for (const el of [root, ...root.querySelectorAll(selectors.join(","))]) {
      if (seen.has(el) || !el.matches(selectors.join(",")) || !shown(el) || !quote(el)) continue;
      seen.add(el);
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      fits(el, getComputedStyle(el));
      notCut(el, r);
      wordsWhole(el);
      if (el.matches("[data-testid=block-label]")) labelClear(el);
    }
  }
  return problems;
}
