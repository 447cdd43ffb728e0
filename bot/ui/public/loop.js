// The chat page's own script (config.toml: custom_js). Chainlit's React app owns the page; this
// only adds to what it renders, and each part does nothing where its element is absent:
// - the thumbs 👍/👎 in the welcome, the footer and the toasts as the buttons' SVG icons (Debian's
//   chromium has no emoji font: the characters showed as empty boxes);
// - "Console" in the user menu, for operators (/admin/operator.json says who is one);
// - a message the server refused (too long, too many) goes back into the composer, its bubble
//   gone (bot/edge.py removes it and sends its text back as a window message);
// - a wrong password shows the form's own message only, not also the toast with Chainlit's
//   internal code ("Unauthorized: credentialssignin").
(() => {
  'use strict';

  const SVG_NS = 'http://www.w3.org/2000/svg';
  // lucide's thumbs-up / thumbs-down: the icons of Chainlit's rating buttons.
  const THUMBS = {
    '👍': ['thumbs up', ['M7 10v12', 'M15 5.88 14 10h5.83a2 2 0 0 1 1.92 2.56l-2.33 8A2 2 0 0 1 17.5 22H4a2 2 0 0 1-2-2v-8a2 2 0 0 1 2-2h2.76a2 2 0 0 0 1.79-1.11L12 2a3.13 3.13 0 0 1 3 3.88Z']],
    '👎': ['thumbs down', ['M17 14V2', 'M9 18.12 10 14H4.17a2 2 0 0 1-1.92-2.56l2.33-8A2 2 0 0 1 6.5 2H20a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2h-2.76a2 2 0 0 0-1.79 1.11L12 22a3.13 3.13 0 0 1-3-3.88Z']],
  };
  const EMOJI = /(👍|👎)\uFE0F?/u;
  // Where the app's own texts are: never the messages (React rewrites those as they stream).
  const WITH_THUMBS = '#welcome-screen, .watermark, [data-sonner-toast], [role="dialog"]';

  function icon(char) {
    const [label, paths] = THUMBS[char];
    const svg = document.createElementNS(SVG_NS, 'svg');
    for (const [k, v] of Object.entries({ viewBox: '0 0 24 24', width: '1em', height: '1em', fill: 'none', stroke: 'currentColor', 'stroke-width': '2', 'stroke-linecap': 'round', 'stroke-linejoin': 'round', role: 'img', 'aria-label': label })) {
      svg.setAttribute(k, v);
    }
    svg.classList.add('loop-thumb');
    svg.style.display = 'inline-block';
    svg.style.verticalAlign = '-0.125em';
    for (const d of paths) {
      const path = document.createElementNS(SVG_NS, 'path');
      path.setAttribute('d', d);
      svg.appendChild(path);
    }
    return svg;
  }

  function replaceThumbs(root) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      // Not in what the user types (a comment box, the composer).
      acceptNode: (node) => (node.parentElement && node.parentElement.closest('textarea, input, [contenteditable="true"]') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
    });
    const found = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (EMOJI.test(node.nodeValue)) found.push(node);
    }
    for (const node of found) {
      const parts = node.nodeValue.split(/(👍\uFE0F?|👎\uFE0F?)/u);
      const frag = document.createDocumentFragment();
      for (const part of parts) {
        const char = part.replace('\uFE0F', '');
        frag.appendChild(THUMBS[char] ? icon(char) : document.createTextNode(part));
      }
      node.parentNode.replaceChild(frag, node);
    }
  }

  // --- the console link in the user menu, for operators -----------------------------------------
  let operator = null; // unknown until asked; asked once per page load, after login
  function askOperator() {
    if (operator !== null || location.pathname.startsWith('/login')) return;
    operator = false;
    fetch('/admin/operator.json', { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : { operator: false }))
      .then((data) => { operator = data.operator === true; addConsoleLink(); })
      .catch(() => { operator = null; });
  }

  function addConsoleLink() {
    const button = document.getElementById('user-nav-button');
    if (!operator || !button || button.getAttribute('aria-expanded') !== 'true') return;
    const menu = document.getElementById(button.getAttribute('aria-controls') || '');
    if (!menu || menu.querySelector('#console-link')) return;
    const items = menu.querySelectorAll('[role="menuitem"]');
    const logout = items[items.length - 1];
    const link = document.createElement('a');
    link.id = 'console-link';
    link.href = '/admin';
    link.setAttribute('role', 'menuitem');
    link.className = logout ? logout.className : '';
    link.textContent = 'Operator console';
    menu.insertBefore(link, logout || null);
  }

  // --- a refused message back into the composer -------------------------------------------------
  function restore(text) {
    const input = document.getElementById('chat-input');
    if (!input || typeof text !== 'string' || input.value.trim() !== '') return;
    // React's textarea: its own value setter, then the input event its onChange listens to.
    const setter = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
    setter.call(input, text);
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.focus();
  }

  window.addEventListener('message', (event) => {
    // Chainlit's "window_message" socket event posts to window.parent: this window itself.
    if (event.source !== window || event.origin !== location.origin) return;
    const data = event.data;
    if (data && data.loop === 'not_sent') restore(data.text);
  });

  // --- the login page's toast with an internal code ---------------------------------------------
  function hideCodeToast(toast) {
    if (/credentialssignin/i.test(toast.textContent || '')) toast.style.display = 'none';
  }

  function update() {
    for (const toast of document.querySelectorAll('[data-sonner-toast]')) hideCodeToast(toast);
    for (const root of document.querySelectorAll(WITH_THUMBS)) replaceThumbs(root);
    askOperator();
    addConsoleLink();
  }

  // Called before the page paints what changed (a microtask): the boxes and the toast are never
  // seen. Idempotent: its own changes call it once more, to find nothing left to do.
  const observer = new MutationObserver(update);

  function start() {
    observer.observe(document.body, { childList: true, subtree: true, characterData: true, attributes: true, attributeFilter: ['aria-expanded'] });
    update();
  }

  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
})();
