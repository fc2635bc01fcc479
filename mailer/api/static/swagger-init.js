// Starts Swagger UI for mailer. Every URL is relative to /docs/, so the page keeps working behind a
// reverse proxy that mounts the service under a prefix, and nothing is fetched from the internet.
window.addEventListener("load", function () {
  "use strict";
  var here = window.location.href;
  window.ui = SwaggerUIBundle({
    url: new URL("../openapi.json", here).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    // Keeps the token across reloads, so "Authorize" is needed once per browser session.
    persistAuthorization: true,
    tryItOutEnabled: false,
    displayRequestDuration: true,
    // The default sends the document to validator.swagger.io for a badge: no internet, and not our data to send.
    validatorUrl: null,
    oauth2RedirectUrl: new URL("static/oauth2-redirect.html", here).href,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
