// Live balance on the balance sheet: server-sent events from the ledger's change stream.
// The page works without it; this only replaces the balance text when a payment commits,
// and the held and available amounts when a hold is placed or closed.
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
  // While pending holds reserve part of the balance: the held sum and what is available.
  var held = document.getElementById("held-block");
  source.addEventListener("available", function (message) {
    var data = JSON.parse(message.data);
    if (!held) {
      return;
    }
    document.getElementById("held").textContent = data.formatted_held;
    document.getElementById("available").textContent = data.formatted_available;
    held.hidden = data.held === 0;
  });
  source.addEventListener("error", function () {
    failures += 1;
    if (failures >= 5) {
      source.close(); // the page stays usable; reload to try again
    }
  });
})();
