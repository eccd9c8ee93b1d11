// The report's only script besides plotly.js. The page's Content-Security-Policy allows exactly
// these two scripts by their sha256 hashes; nothing in the page may use inline event handlers.
(function () {
  "use strict";
  var blocks = document.querySelectorAll('script[type="application/json"][data-figure]');
  for (var i = 0; i < blocks.length; i++) {
    var figure = JSON.parse(blocks[i].textContent);
    Plotly.newPlot(document.getElementById(blocks[i].getAttribute("data-figure")),
                   figure.data, figure.layout, {responsive: true, displaylogo: false});
  }

  // A link to a finding or a group inside a folded section opens every fold around it.
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    if (!target) {
      return;
    }
    for (var node = target; node; node = node.parentElement) {
      if (node.tagName === "DETAILS") {
        node.open = true;
      }
    }
    target.scrollIntoView();
  }
  window.addEventListener("hashchange", openTarget);
  openTarget();

  var toggle = document.getElementById("toggle-findings");
  if (toggle) {
    toggle.addEventListener("click", function () {
      var open = toggle.getAttribute("data-open") !== "true";
      var groups = document.querySelectorAll("#findings details.group");
      for (var j = 0; j < groups.length; j++) {
        groups[j].open = open;
      }
      toggle.setAttribute("data-open", open ? "true" : "false");
      toggle.textContent = open ? "fold all groups" : "show all findings";
    });
  }
})();
