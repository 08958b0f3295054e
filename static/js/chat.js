// The chat page: send a message, read the streamed reply (server-sent events over a fetch()
// POST), stop it, retry after an error. Model output is only ever inserted as text while it
// streams; the finished answer is replaced by the HTML the server rendered and sanitised.
(function () {
  "use strict";

  var form = document.getElementById("chat-form");
  if (!form) return;
  var list = document.getElementById("chat-messages");
  var input = document.getElementById("chat-input");
  var files = document.getElementById("chat-files");
  var send = document.getElementById("chat-send");
  var stop = document.getElementById("chat-stop");
  var formError = document.getElementById("chat-form-error");
  var controller = null;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollDown() { window.scrollTo(0, document.body.scrollHeight); }

  function busy(on) {
    send.disabled = on;
    send.setAttribute("aria-busy", on ? "true" : "false");
    stop.hidden = !on;
  }

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = !message;
  }

  function addUserMessage(text, fileList) {
    var empty = list.querySelector(".chat-empty");
    if (empty) empty.remove();
    var article = el("article", "msg msg-user");
    article.appendChild(el("div", "msg-body user-text", text));
    if (fileList && fileList.length) {
      var p = el("p", "attachments small");
      Array.prototype.forEach.call(fileList, function (f) { p.appendChild(el("span", "badge", "📄 " + f.name)); });
      article.appendChild(p);
    }
    list.appendChild(article);
  }

  // One assistant answer as it streams in.
  function Answer() {
    this.article = el("article", "msg msg-assistant");
    this.article.setAttribute("data-status", "streaming");
    this.status = el("p", "chat-status small", "Waiting for the model…");
    this.body = el("div", "msg-body streaming-text");
    this.article.appendChild(this.status);
    this.article.appendChild(this.body);
    this.content = "";
    this.thinking = null;
    this.thinkingStarted = null;
    list.appendChild(this.article);
  }
  Answer.prototype.think = function (text) {
    if (!this.thinking) {
      this.thinking = el("details", "thinking");
      this.thinking.open = true;
      this.thinkingSummary = el("summary", "", "Thinking…");
      this.thinkingText = el("div", "thinking-text");
      this.thinking.appendChild(this.thinkingSummary);
      this.thinking.appendChild(this.thinkingText);
      this.article.insertBefore(this.thinking, this.body);
      this.thinkingStarted = Date.now();
    }
    this.thinkingText.textContent += text;
  };
  Answer.prototype.endThinking = function () {
    if (this.thinking && !this.thinkingEnded) {
      this.thinkingEnded = Date.now();
      var seconds = (this.thinkingEnded - this.thinkingStarted) / 1000;
      this.thinkingSummary.textContent = "Thought for " + seconds.toFixed(1) + " s";
      this.thinking.open = false;
    }
  };
  Answer.prototype.add = function (text) {
    this.content += text;
    // Models that put <think>…</think> in the content itself.
    var match = /^\s*<think>([\s\S]*?)(<\/think>|$)([\s\S]*)$/.exec(this.content);
    if (match) {
      if (!this.thinking) this.think("");
      this.thinkingText.textContent = match[1];
      if (match[2]) this.endThinking();
      this.body.textContent = match[3].replace(/^\s+/, "");
    } else {
      this.endThinking();
      this.body.textContent = this.content;
    }
  };
  Answer.prototype.setStatus = function (text) {
    this.status.textContent = text;
    this.status.hidden = !text;
  };
  Answer.prototype.finish = function (html) {
    var wrapper = document.createElement("div");
    wrapper.innerHTML = html; // rendered and sanitised by the server (servers/chat.py)
    var replacement = wrapper.firstElementChild;
    if (replacement) this.article.replaceWith(replacement);
  };
  Answer.prototype.fail = function (message, stopped) {
    this.setStatus("");
    this.endThinking();
    this.article.setAttribute("data-status", stopped ? "stopped" : "error");
    if (stopped) {
      this.article.appendChild(el("p", "muted small", "Stopped."));
      return;
    }
    var box = el("div", "chat-error");
    box.setAttribute("role", "alert");
    box.appendChild(el("p", "", message));
    var retry = el("button", "small", "Retry");
    retry.type = "button";
    retry.addEventListener("click", function () { submit(true); });
    box.appendChild(retry);
    if (!this.content && !this.thinking) this.body.remove();
    this.article.classList.add("chat-error-host");
    this.article.appendChild(box);
  };

  function remember(meta) {
    var sidebar = document.getElementById("conversation-list");
    if (sidebar && !form.getAttribute("data-conversation")) {
      var placeholder = sidebar.querySelector("[data-placeholder]");
      if (placeholder) placeholder.remove();
      var item = el("li");
      item.setAttribute("aria-current", "true");
      var link = el("a", "", meta.title);
      link.href = meta.url;
      item.appendChild(link);
      item.appendChild(el("small", "muted", "just now"));
      sidebar.insertBefore(item, sidebar.firstChild);
    }
    form.setAttribute("data-conversation", meta.conversation);
    if (window.location.pathname !== meta.url) {
      window.history.replaceState(null, "", meta.url);
      document.title = meta.title + " · Chat · MLX Portal";
    }
  }

  // Parse server-sent events from a stream of text chunks.
  function handleEvent(block, answer) {
    var name = "message", data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    if (!data.length) return; // a comment (keep-alive)
    var payload;
    try { payload = JSON.parse(data.join("\n")); } catch (e) { return; }
    if (name === "meta") remember(payload);
    else if (name === "status") answer.setStatus(payload.message || "Starting the server…");
    else if (name === "error") { answer.fail(payload.message); answer.failed = true; }
    else if (name === "done") { answer.done = true; answer.finish(payload.html); }
    else if (payload.choices) {
      answer.setStatus("");
      payload.choices.forEach(function (choice) {
        var delta = choice.delta || {};
        var thought = delta.reasoning || delta.reasoning_content;
        if (thought) answer.think(thought);
        if (delta.content) answer.add(delta.content);
      });
      scrollDown();
    }
  }

  function submit(retry) {
    if (controller) return;
    showFormError("");
    var data = new FormData(form);
    data.set("conversation", form.getAttribute("data-conversation") || "");
    if (retry) {
      data.set("retry", "1");
      data.delete("message");
      data.delete("files");
      list.querySelectorAll('.msg-assistant[data-status="error"], .msg-assistant[data-status="stopped"]').forEach(function (a) {
        if (a === list.lastElementChild) a.remove();
      });
    } else {
      if (!input.value.trim() && !(files && files.files.length)) {
        showFormError("Write a message (or attach a text file) first.");
        return;
      }
    }
    controller = new AbortController();
    busy(true);
    var text = input.value, sentFiles = files ? Array.prototype.slice.call(files.files) : [];
    var answer = null;
    fetch(form.action, {
      method: "POST",
      body: data,
      headers: { "X-CSRFToken": data.get("csrfmiddlewaretoken"), "Accept": "text/event-stream" },
      signal: controller.signal,
      credentials: "same-origin",
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          // The session ended (or the account was disabled): the portal names the page to go to.
          if (body.redirect) { window.location.assign(body.redirect); return; }
          showFormError(body.error || "The message could not be sent (HTTP " + response.status + ").");
        });
      }
      if (!retry) {
        addUserMessage(text, sentFiles);
        input.value = "";
        if (files) files.value = "";
      }
      answer = new Answer();
      scrollDown();
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function pump() {
        return reader.read().then(function (step) {
          if (step.done) {
            if (buffer.trim()) handleEvent(buffer, answer);
            if (!answer.done && !answer.failed) answer.fail("The reply ended early. The server may have stopped.");
            return;
          }
          buffer += decoder.decode(step.value, { stream: true }).replace(/\r\n/g, "\n");
          var parts = buffer.split("\n\n");
          buffer = parts.pop();
          parts.forEach(function (block) { handleEvent(block, answer); });
          return pump();
        });
      }
      return pump();
    }).catch(function (error) {
      if (error.name === "AbortError") {
        if (answer) answer.fail("", true);
      } else if (answer) {
        answer.fail("The connection to the portal broke: " + error.message);
      } else {
        showFormError("The portal could not be reached: " + error.message);
      }
    }).finally(function () {
      controller = null;
      busy(false);
      input.focus();
      refreshServer();
    });
  }

  // A message may have started the server (on demand): show its state as it is now, in the
  // panel and in the picker, instead of the "stopped" the page was drawn with.
  function refreshServer() {
    var panel = document.getElementById("server-panel");
    var select = document.getElementById("chat-profile");
    if (!panel || !select || !select.value || panel.getAttribute("data-state") === "running") return;
    htmx.ajax("GET", select.getAttribute("hx-get"), {
      target: "#server-panel", swap: "outerHTML", values: { profile: select.value },
    }).then(function () {
      var state = document.getElementById("server-panel").getAttribute("data-state");
      var option = select.options[select.selectedIndex];
      if (state && option) option.textContent = option.textContent.replace(/ — [^—]*$/, " — " + state);
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit(false);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit(false);
    }
  });
  stop.addEventListener("click", function () { if (controller) controller.abort(); });
})();
