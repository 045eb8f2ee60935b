// Live balance on the balance sheet: server-sent events from the ledger's change stream.
// The page works without it; this only replaces the balance text when a payment commits.
(function () {
  "use strict";
  var balance = document.querySelector("[data-live-balance]");
  if (!balance || !window.EventSource) {
    return;
  }
  var note = document.getElementById("live-note");
  var text = document.getElementById("live-text");
  var failures = 0;
  var source = new EventSource(balance.getAttribute("data-live-balance"));
  source.addEventListener("balance", function (message) {
    failures = 0;
    balance.setAttribute("data-live-state", "open"); // the stream is following the ledger
    var data = JSON.parse(message.data);
    if (balance.textContent === data.formatted) {
      return;
    }
    balance.textContent = data.formatted;
    balance.classList.remove("flash");
    void balance.offsetWidth; // restart the highlight
    balance.classList.add("flash");
    if (note && text && data.kind) {
      text.textContent = "New " + data.kind + " " + data.formatted_amount + ".";
      note.hidden = false;
    }
  });
  source.addEventListener("error", function () {
    failures += 1;
    if (failures >= 5) {
      source.close(); // the page stays usable; reload to try again
    }
  });
})();
