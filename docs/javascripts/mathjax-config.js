// MathJax 3 settings for pymdownx.arithmatex (generic mode): typeset only the .arithmatex spans.
// MathJax itself (assets/mathjax/tex-svg.js) is served from the site: nothing comes from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex"
  }
};
