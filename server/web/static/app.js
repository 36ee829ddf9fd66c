// Small progressive enhancements; every page works without them.
(function () {
  "use strict";
  // Upload progress: live job status without the page's 3 s refresh.
  var job = document.querySelector("[data-job-status]");
  if (job) {
    var url = job.getAttribute("data-job-status");
    var bar = document.getElementById("job-progress");
    var text = document.getElementById("job-text");
    var state = document.getElementById("job-state");
    var list = document.getElementById("job-results");
    var errors = document.getElementById("job-errors");
    var poll = function () {
      fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (s) {
        bar.max = s.total; bar.value = s.done;
        text.textContent = s.done + " of " + s.total + " analysed" + (s.current ? " (now: " + s.current + ")" : "");
        state.textContent = "State: " + s.state;
        list.textContent = "";
        s.result_ids.forEach(function (rid, i) {
          var li = document.createElement("li"); var a = document.createElement("a");
          a.href = "/results/" + rid; a.textContent = "result " + (i + 1); li.appendChild(a); list.appendChild(li);
        });
        errors.textContent = "";
        s.errors.forEach(function (e) { var li = document.createElement("li"); li.className = "error"; li.textContent = e; errors.appendChild(li); });
        if (s.state === "queued" || s.state === "running") { setTimeout(poll, 700); }
        else if (s.result_ids.length === 1 && s.errors.length === 0) { window.location = "/results/" + s.result_ids[0]; }
      }).catch(function () { setTimeout(poll, 2000); });
    };
    var refresh = document.querySelector('meta[http-equiv="refresh"]');
    if (refresh) { refresh.parentNode.removeChild(refresh); }
    poll();
  }
  // Upload form: show transfer progress of the files themselves.
  var form = document.getElementById("upload-form");
  if (form && window.XMLHttpRequest) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var bar = document.getElementById("upload-progress");
      bar.hidden = false;
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); } };
      xhr.onload = function () {
        if (xhr.status === 200 && xhr.responseURL && xhr.responseURL.indexOf("/uploads/") >= 0) { window.location = xhr.responseURL; }
        else { document.open(); document.write(xhr.responseText); document.close(); }
      };
      xhr.send(new FormData(form));
    });
  }
  document.querySelectorAll("[data-print]").forEach(function (b) { b.addEventListener("click", function () { window.print(); }); });
})();
