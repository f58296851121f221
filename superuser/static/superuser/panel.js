/* quay-geo superuser panel: small progressive enhancements; every page works without them. */
(function () {
  "use strict";

  function storageForm(form) {
    var cards = form.querySelector("#cards");
    var total = form.querySelector('input[name="form-TOTAL_FORMS"]');
    var template = document.getElementById("card-template");
    var replication = form.querySelector('input[name="storage_replication_enabled"]');

    function renumber() {
      Array.prototype.forEach.call(cards.querySelectorAll("[data-card]"), function (card, i) {
        var order = card.querySelector('input[name$="-ORDER"]');
        if (order) { order.value = i + 1; }
        var position = card.querySelector("[data-position]");
        if (position) { position.textContent = (i + 1) + ". "; }
      });
    }

    function showKind(card) {
      var select = card.querySelector('select[name$="-kind"]');
      Array.prototype.forEach.call(card.querySelectorAll("fieldset.engine"), function (group) {
        group.hidden = group.getAttribute("data-kind") !== select.value;
      });
    }

    function move(card, up) {
      var other = up ? card.previousElementSibling : card.nextElementSibling;
      if (!other) { return; }
      cards.insertBefore(card, up ? other : other.nextElementSibling);
      renumber();
      card.querySelector('[data-move="' + (up ? "up" : "down") + '"]').focus();
    }

    function wire(card) {
      var select = card.querySelector('select[name$="-kind"]');
      select.addEventListener("change", function () { showKind(card); });
      showKind(card);
      var id = card.querySelector('input[name$="-location_id"]');
      var title = card.querySelector("[data-card-title]");
      id.addEventListener("input", function () { title.textContent = id.value || "New storage engine"; });
      card.querySelector('[data-move="up"]').addEventListener("click", function () { move(card, true); });
      card.querySelector('[data-move="down"]').addEventListener("click", function () { move(card, false); });
      var remove = card.querySelector('input[name$="-DELETE"]');
      var mark = function () { card.classList.toggle("removing", remove.checked); };
      remove.addEventListener("change", mark);
      mark();
    }

    Array.prototype.forEach.call(cards.querySelectorAll("[data-card]"), wire);
    renumber();
    form.classList.add("enhanced");

    form.querySelector("#add-card").addEventListener("click", function (event) {
      event.preventDefault();
      var index = parseInt(total.value, 10) || 0;
      var holder = document.createElement("div");
      holder.innerHTML = template.innerHTML.replace(/__prefix__/g, String(index)).trim();
      var card = holder.firstElementChild;
      cards.appendChild(card);
      total.value = index + 1;
      wire(card);
      renumber();
      card.querySelector('input[name$="-location_id"]').focus();
    });

    replication.addEventListener("change", function () {
      form.classList.toggle("replication-on", replication.checked);
    });
  }

  function selfRefreshing(box) {
    var url = box.getAttribute("data-refresh-url");
    var seconds = parseFloat(box.getAttribute("data-refresh-seconds")) || 3;
    var busy = false;
    window.setInterval(function () {
      var active = document.activeElement;
      if (busy || document.hidden || (active && box.contains(active) && active.tagName === "SELECT")) {
        return;
      }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (response.redirected) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html !== null) { box.innerHTML = html; } })
        .catch(function () { /* offline for a moment: the next tick tries again */ })
        .then(function () { busy = false; });
    }, seconds * 1000);
  }

  var form = document.getElementById("storage-form");
  if (form) { storageForm(form); }
  var status = document.getElementById("status");
  if (status && status.getAttribute("data-refresh-url")) { selfRefreshing(status); }
})();
