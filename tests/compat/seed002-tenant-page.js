// Seed 002 (Diquis, "Redis Backplane Configuration Instructions"), section "## 6. Frontend
// JavaScript Integration": the Razor page's script as written. Changed: the hub URL (HUB_URL) and
// the token source (an accessTokenFactory returning ACCESS_TOKEN; the page relied on its cookie).
// `signalR`, `toastr` and `location` are the page's globals, provided by tests/js/compat-driver.mjs.
    const connection = new signalR.HubConnectionBuilder()
        .withUrl(HUB_URL, { accessTokenFactory: () => ACCESS_TOKEN })
        .withAutomaticReconnect()
        .build();

    connection.on("TenantCreated", (data) => {
        console.log("? Tenant created:", data);
        toastr.success(`Tenant "${data.tenantName}" created successfully!`);
        
        // Update UI - refresh tenant list or update specific row
        location.reload(); // Simple approach, or use AJAX to update specific elements
    });

    connection.on("TenantCreationFailed", (data) => {
        console.error("? Tenant creation failed:", data);
        toastr.error(`Failed to create tenant: ${data.error}`);
    });

    connection.on("TenantUpdated", (data) => {
        console.log("? Tenant updated:", data);
        toastr.success(`Tenant "${data.tenantName}" updated successfully!`);
        location.reload();
    });

    connection.on("TenantUpdateFailed", (data) => {
        console.error("? Tenant update failed:", data);
        toastr.error(`Failed to update tenant: ${data.error}`);
    });

    connection.start()
        .then(() => console.log("?? SignalR connected"))
        .catch(err => console.error("? SignalR connection error:", err));
