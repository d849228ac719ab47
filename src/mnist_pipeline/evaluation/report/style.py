"""The report page's stylesheet, inlined into report.html.

Kept as a Python string, not a .css file, because the workflow reruns the report when a
package module it imports changes, and only Python modules are traced that way.
"""

CSS = """
:root { color-scheme: light; --fg: #1d232b; --muted: #5b6470; --line: #d9dee5; --soft: #f3f5f8;
        --accent: #0b5cad; --bad: #b42318; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--fg);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header, main, footer { max-width: 1120px; margin: 0 auto; padding: 0 16px; }
h1 { font-size: 1.6rem; margin: 1.2rem 0 0.4rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 0.6rem; padding-top: 0.8rem; border-top: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.5rem 0 0.4rem; }
a { color: var(--accent); }
.lede { font-size: 1.05rem; max-width: 75ch; }
nav { font-size: 0.9rem; }
nav a { margin-right: 0.8em; white-space: nowrap; }
.rank { color: var(--muted); font-weight: normal; margin-right: 0.3em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.9rem; }
th, td { padding: 0.35rem 0.6rem; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: normal; vertical-align: bottom; }
td small { color: var(--muted); font-size: 0.8rem; }
th:first-child, td:first-child, .text { text-align: left; }
td.wrap { white-space: normal; min-width: 16ch; }
tr.best td { font-weight: 600; }
td.tie { color: var(--muted); }
/* Generated sweep names are long: one a line, a wrapped rest indented so each name's start shows. */
ul.members { list-style: none; margin: 0; padding: 0; min-width: 24ch; }
ul.members li { padding-left: 1.2em; text-indent: -1.2em; }
.note { font-size: 0.85rem; color: var(--muted); max-width: 80ch; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 430px), 1fr)); gap: 16px;
          align-items: start; margin: 1rem 0; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 0.85rem; color: var(--muted); margin-top: 0.3rem; }
.stats { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; margin: 0 0 1rem; }
.stats div { background: var(--soft); border-radius: 6px; padding: 0.45rem 0.7rem; }
.stats dt { font-size: 0.78rem; color: var(--muted); }
.stats dd { margin: 0; font-weight: 600; font-variant-numeric: tabular-nums; }
.gallery { list-style: none; padding: 0; margin: 0.5rem 0 1rem; display: grid; gap: 10px 8px;
           grid-template-columns: repeat(auto-fill, minmax(76px, 1fr)); }
.gallery li { font-size: 0.75rem; line-height: 1.25; text-align: center; overflow-wrap: anywhere; }
.gallery img { display: block; width: 72px; height: auto; margin: 0 auto 3px; image-rendering: pixelated;
               border-radius: 3px; }
.gallery .pred { color: var(--bad); }
.gallery .meta { color: var(--muted); }
.pair p { margin: 0.8rem 0 0; }
ul.worst { max-width: 80ch; padding-left: 1.2em; }
ul.worst li { margin: 0.2rem 0; }
details { margin: 0.6rem 0; }
summary { cursor: pointer; color: var(--accent); }
pre { background: var(--soft); padding: 0.7rem; overflow-x: auto; font-size: 0.82rem; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.85em; }
td.hash { white-space: normal; word-break: break-all; min-width: 20ch; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.2rem 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: 0.8rem; margin: 2.5rem auto 1.5rem; }
@media (max-width: 600px) {
  body { font-size: 14px; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: 0.4rem; }
}
"""
