/* The domain XML parser and formatter: libxml2 in, BerthDomainDef out, and back. */
#include "domain-xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <stdarg.h>
#include <string.h>

/* Values of xmlNode._private / xmlAttr._private: what the parser did with a node. */
#define SEEN_NONE 0
#define SEEN_CONTAINER 1 /* consumed; only whitespace text allowed inside */
#define SEEN_TEXT 2      /* consumed with its text content */
#define SEEN_SUBTREE 3   /* consumed with everything below it (<metadata>) */

#define MAX_PATH_LEN 4096
#define MAX_SUN_PATH 107 /* sizeof(sockaddr_un.sun_path) - 1 */
#define MAX_TEXT_LEN 4096
#define MAX_BOOT_DEVS 4
#define MAX_REPORTED 32
#define MAX_ATTRIBUTES 64 /* per start tag, namespace declarations included */

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlParserCtxt, xmlFreeParserCtxt)

static const char *const on_event_values[] = {"destroy", "restart", "preserve", NULL};
static const char *const boot_values[] = {"hd", "cdrom", "network", "fd", NULL};
static const char *const arch_values[] = {
    "x86_64", "i686", "aarch64", "ppc64le", "s390x", "riscv64", NULL};
static const char *const cache_values[] = {
    "none", "writeback", "writethrough", "directsync", "unsafe", NULL};
static const char *const net_models[] = {"virtio", "e1000", "e1000e", "rtl8139", NULL};

/* ---------------------------------------------------------------------------------------- */
/* Small helpers */

static gboolean
in_list(const char *value, const char *const *list)
{
    return value && g_strv_contains(list, value);
}

/* A user string for a message: quoted, bounded and free of control characters. */
static char *
quote(const char *value)
{
    GString *s = g_string_new("'");
    gsize n = 0;

    for (const char *p = value ? value : ""; *p; p++, n++) {
        if (n == 64) {
            g_string_append(s, "...");
            break;
        }
        g_string_append_c(s, g_ascii_iscntrl(*p) ? '?' : *p);
    }
    g_string_append_c(s, '\'');
    return g_string_free(s, FALSE);
}

static gboolean
is_blank(const char *s)
{
    for (; s && *s; s++) {
        if (!g_ascii_isspace(*s)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean
chars_valid(const char *s, const char *extra)
{
    for (; *s; s++) {
        if (!g_ascii_isalnum(*s) && !strchr(extra, *s)) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean
is_element(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           (name == NULL || strcmp((const char *) node->name, name) == 0);
}

static void
mark(xmlNode *node, int how)
{
    node->_private = GINT_TO_POINTER(how);
}

/* The name of an element or attribute as written, with its namespace prefix. */
static void
append_qname(GString *s, const xmlNs *ns, const xmlChar *name)
{
    if (ns && ns->prefix) {
        g_string_append_printf(s, "%s:", (const char *) ns->prefix);
    }
    g_string_append(s, (const char *) name);
}

/* An XPath-like path: /domain/devices/disk[2]; the index only when there are siblings of the
 * same name. */
static void
append_path(GString *s, const xmlNode *node)
{
    guint index = 0, count = 0;

    if (node->parent && node->parent->type == XML_ELEMENT_NODE) {
        append_path(s, node->parent);
    }
    g_string_append_c(s, '/');
    append_qname(s, node->ns, node->name);
    if (!node->parent) {
        return;
    }
    for (const xmlNode *c = node->parent->children; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && c->ns == node->ns &&
            strcmp((const char *) c->name, (const char *) node->name) == 0) {
            count++;
            if (c == node) {
                index = count;
            }
        }
    }
    if (count > 1) {
        g_string_append_printf(s, "[%u]", index);
    }
}

static char *
node_path(const xmlNode *node)
{
    GString *s = g_string_new(NULL);

    append_path(s, node);
    return g_string_free(s, FALSE);
}

static char *
attr_value(const xmlAttr *attr)
{
    xmlChar *raw = xmlNodeGetContent((const xmlNode *) attr);
    char *value = g_strdup(raw ? (const char *) raw : "");

    xmlFree(raw);
    return value;
}

/*
 * Sets @error to "domain XML: <tag attr='value'>[ at /path]: MESSAGE". Nodes below a direct
 * child of <domain> also give their path, so that disk[2] is told from disk[1].
 */
G_GNUC_PRINTF(4, 5)
static gboolean
fail(GError **error, const xmlNode *node, const char *attr, const char *fmt, ...)
{
    g_autoptr(GString) where = g_string_new("<");
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);

    append_qname(where, node->ns, node->name);
    if (attr) {
        xmlAttr *a = xmlHasProp((xmlNode *) node, (const xmlChar *) attr);
        g_autofree char *value = a ? attr_value(a) : NULL;
        g_autofree char *quoted = value ? quote(value) : NULL;

        g_string_append_printf(where, " %s", attr);
        if (quoted) {
            g_string_append_printf(where, "=%s", quoted);
        }
    }
    g_string_append_c(where, '>');
    if (node->parent && node->parent->type == XML_ELEMENT_NODE && node->parent->parent &&
        node->parent->parent->type == XML_ELEMENT_NODE) {
        g_autofree char *path = node_path(node);

        g_string_append_printf(where, " at %s", path);
    }
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "domain XML: %s: %s",
                where->str, msg);
    return FALSE;
}

G_GNUC_PRINTF(2, 3)
static gboolean
fail_plain(GError **error, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "domain XML: %s", msg);
    return FALSE;
}

/* The attribute @name (no namespace) of @node, marked as consumed; NULL when absent. */
static char *
get_attr(xmlNode *node, const char *name)
{
    for (xmlAttr *a = node->properties; a; a = a->next) {
        if (a->ns == NULL && strcmp((const char *) a->name, name) == 0) {
            a->_private = GINT_TO_POINTER(SEEN_TEXT);
            return attr_value(a);
        }
    }
    return NULL;
}

/* The one child element @name of @node, marked consumed, or NULL; an error when repeated. */
static gboolean
get_child(xmlNode *node, const char *name, xmlNode **out, GError **error)
{
    *out = NULL;
    for (xmlNode *c = node->children; c; c = c->next) {
        if (!is_element(c, name)) {
            continue;
        }
        if (*out) {
            return fail(error, c, NULL, "the element may appear only once");
        }
        *out = c;
    }
    if (*out) {
        mark(*out, SEEN_CONTAINER);
    }
    return TRUE;
}

/* The text content of @node (text and CDATA children), which marks it as a text element. */
static char *
node_text(xmlNode *node)
{
    GString *s = g_string_new(NULL);

    mark(node, SEEN_TEXT);
    for (xmlNode *c = node->children; c; c = c->next) {
        if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
            g_string_append(s, (const char *) c->content);
        }
    }
    return g_string_free(s, FALSE);
}

/* Text of the single child @name, or NULL when absent. */
static gboolean
get_child_text(xmlNode *node, const char *name, xmlNode **child, char **out, GError **error)
{
    *out = NULL;
    if (!get_child(node, name, child, error)) {
        return FALSE;
    }
    if (*child) {
        *out = node_text(*child);
    }
    return TRUE;
}

/* A decimal number, with surrounding whitespace allowed, in 0..@max. */
static gboolean
parse_decimal(const char *text, guint64 max, guint64 *out)
{
    g_autofree char *s = g_strstrip(g_strdup(text));
    guint64 v = 0;

    if (*s == '\0' || strlen(s) > 20) {
        return FALSE;
    }
    for (const char *p = s; *p; p++) {
        if (!g_ascii_isdigit(*p)) {
            return FALSE;
        }
        if (v > (G_MAXUINT64 - (guint64) (*p - '0')) / 10) {
            return FALSE;
        }
        v = v * 10 + (guint64) (*p - '0');
    }
    if (v > max) {
        return FALSE;
    }
    *out = v;
    return TRUE;
}

/* A PCI address field: "0x1f" (hex) or "31" (decimal), in 0..@max. */
static gboolean
parse_pci_number(const char *text, guint max, guint *out)
{
    guint64 v = 0;
    gsize len = strlen(text);

    if (len > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        if (len > 10) {
            return FALSE;
        }
        for (const char *p = text + 2; *p; p++) {
            if (!g_ascii_isxdigit(*p)) {
                return FALSE;
            }
            v = v * 16 + (guint64) g_ascii_xdigit_value(*p);
        }
    } else {
        if (len == 0 || len > 10) {
            return FALSE;
        }
        for (const char *p = text; *p; p++) {
            if (!g_ascii_isdigit(*p)) {
                return FALSE;
            }
            v = v * 10 + (guint64) (*p - '0');
        }
    }
    if (v > max) {
        return FALSE;
    }
    *out = (guint) v;
    return TRUE;
}

static gboolean
path_valid(const char *path, gsize max)
{
    return path[0] == '/' && strlen(path) <= max;
}

/* ---------------------------------------------------------------------------------------- */
/* Public value helpers */

gboolean
berth_domain_name_valid(const char *name, GError **error)
{
    g_autofree char *q = quote(name);
    gsize len = name ? strlen(name) : 0;

    if (len == 0 || len > 64) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain name %s must have 1 to 64 characters", q);
        return FALSE;
    }
    if (name[0] == '.') {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain name %s must not start with '.'", q);
        return FALSE;
    }
    if (!chars_valid(name, "_.+-")) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain name %s may only contain letters, digits and '_.+-'", q);
        return FALSE;
    }
    return TRUE;
}

/* @n hex digits at @p. */
static gboolean
hex_field(const char *p, gsize n, guint *out)
{
    *out = 0;
    for (gsize i = 0; i < n; i++) {
        if (!g_ascii_isxdigit(p[i])) {
            return FALSE;
        }
        *out = *out * 16 + (guint) g_ascii_xdigit_value(p[i]);
    }
    return TRUE;
}

gboolean
berth_pci_address_parse(const char *text, BerthPciAddress *addr, GError **error)
{
    gsize len = text ? strlen(text) : 0;
    const char *p = text;
    guint domain = 0, bus, slot, function;
    g_autofree char *q = NULL;

    g_return_val_if_fail(addr != NULL, FALSE);
    /* "DDDD:BB:SS.F", or "BB:SS.F" for domain 0. */
    if (len == 12) {
        if (!hex_field(p, 4, &domain) || p[4] != ':') {
            goto bad;
        }
        p += 5;
    } else if (len != 7) {
        goto bad;
    }
    if (!hex_field(p, 2, &bus) || p[2] != ':' || !hex_field(p + 3, 2, &slot) || p[5] != '.' ||
        !hex_field(p + 6, 1, &function) || slot > 0x1f || function > 7) {
        goto bad;
    }
    addr->set = TRUE;
    addr->domain = domain;
    addr->bus = bus;
    addr->slot = slot;
    addr->function = function;
    return TRUE;

bad:
    q = quote(text);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "PCI address %s is not of the form DDDD:BB:SS.F (slot at most 1f, "
                "function at most 7)", q);
    return FALSE;
}

char *
berth_pci_address_format(const BerthPciAddress *addr)
{
    return g_strdup_printf("%04x:%02x:%02x.%x", addr->domain, addr->bus, addr->slot,
                           addr->function);
}

/* ---------------------------------------------------------------------------------------- */
/* Free and copy */

static void
disk_free(BerthDiskDef *d)
{
    if (!d) {
        return;
    }
    g_free(d->alias);
    g_free(d->device);
    g_free(d->driver_type);
    g_free(d->cache);
    g_free(d->source_file);
    g_free(d->target_dev);
    g_free(d->target_bus);
    g_free(d->serial);
    g_free(d);
}

static void
net_free(BerthNetDef *n)
{
    if (!n) {
        return;
    }
    g_free(n->alias);
    g_free(n->type);
    g_free(n->mac);
    g_free(n->model);
    g_free(n->source);
    g_free(n->target_dev);
    g_free(n);
}

static void
serial_free(BerthSerialDef *s)
{
    if (!s) {
        return;
    }
    g_free(s->alias);
    g_free(s->type);
    g_free(s->path);
    g_free(s->mode);
    g_free(s);
}

static void
fs_free(BerthFsDef *f)
{
    if (!f) {
        return;
    }
    g_free(f->alias);
    g_free(f->driver_type);
    g_free(f->source_dir);
    g_free(f->source_socket);
    g_free(f->target_dir);
    g_free(f->cache);
    g_free(f);
}

static void
hostdev_free(BerthHostdevDef *h)
{
    if (!h) {
        return;
    }
    g_free(h->alias);
    g_free(h);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthDiskDef, disk_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthNetDef, net_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthSerialDef, serial_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthFsDef, fs_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthHostdevDef, hostdev_free)

void
berth_domain_def_free(BerthDomainDef *def)
{
    if (!def) {
        return;
    }
    g_free(def->type);
    g_free(def->name);
    g_free(def->uuid);
    g_free(def->title);
    g_free(def->description);
    g_free(def->mem_source);
    g_free(def->cpu_mode);
    g_free(def->cpu_model);
    g_free(def->os_type);
    g_free(def->arch);
    g_free(def->machine);
    g_free(def->kernel);
    g_free(def->initrd);
    g_free(def->cmdline);
    g_strfreev(def->boot_devs);
    g_free(def->on_poweroff);
    g_free(def->on_reboot);
    g_free(def->on_crash);
    g_free(def->emulator);
    for (guint i = 0; i < def->n_disks; i++) {
        disk_free(def->disks[i]);
    }
    g_free(def->disks);
    for (guint i = 0; i < def->n_nets; i++) {
        net_free(def->nets[i]);
    }
    g_free(def->nets);
    for (guint i = 0; i < def->n_serials; i++) {
        serial_free(def->serials[i]);
    }
    g_free(def->serials);
    for (guint i = 0; i < def->n_filesystems; i++) {
        fs_free(def->filesystems[i]);
    }
    g_free(def->filesystems);
    for (guint i = 0; i < def->n_hostdevs; i++) {
        hostdev_free(def->hostdevs[i]);
    }
    g_free(def->hostdevs);
    g_free(def);
}

/* Copies an array of @n device pointers with @copy_one. */
static gpointer *
copy_devices(gpointer *src, guint n, gpointer (*copy_one)(gconstpointer))
{
    gpointer *dst;

    if (!src || n == 0) {
        return NULL;
    }
    dst = g_new0(gpointer, n);
    for (guint i = 0; i < n; i++) {
        dst[i] = copy_one(src[i]);
    }
    return dst;
}

static gpointer
disk_copy(gconstpointer p)
{
    const BerthDiskDef *s = p;
    BerthDiskDef *d = g_memdup2(s, sizeof(*s));

    d->alias = g_strdup(s->alias);
    d->device = g_strdup(s->device);
    d->driver_type = g_strdup(s->driver_type);
    d->cache = g_strdup(s->cache);
    d->source_file = g_strdup(s->source_file);
    d->target_dev = g_strdup(s->target_dev);
    d->target_bus = g_strdup(s->target_bus);
    d->serial = g_strdup(s->serial);
    return d;
}

static gpointer
net_copy(gconstpointer p)
{
    const BerthNetDef *s = p;
    BerthNetDef *d = g_memdup2(s, sizeof(*s));

    d->alias = g_strdup(s->alias);
    d->type = g_strdup(s->type);
    d->mac = g_strdup(s->mac);
    d->model = g_strdup(s->model);
    d->source = g_strdup(s->source);
    d->target_dev = g_strdup(s->target_dev);
    return d;
}

static gpointer
serial_copy(gconstpointer p)
{
    const BerthSerialDef *s = p;
    BerthSerialDef *d = g_memdup2(s, sizeof(*s));

    d->alias = g_strdup(s->alias);
    d->type = g_strdup(s->type);
    d->path = g_strdup(s->path);
    d->mode = g_strdup(s->mode);
    return d;
}

static gpointer
fs_copy(gconstpointer p)
{
    const BerthFsDef *s = p;
    BerthFsDef *d = g_memdup2(s, sizeof(*s));

    d->alias = g_strdup(s->alias);
    d->driver_type = g_strdup(s->driver_type);
    d->source_dir = g_strdup(s->source_dir);
    d->source_socket = g_strdup(s->source_socket);
    d->target_dir = g_strdup(s->target_dir);
    d->cache = g_strdup(s->cache);
    return d;
}

static gpointer
hostdev_copy(gconstpointer p)
{
    const BerthHostdevDef *s = p;
    BerthHostdevDef *d = g_memdup2(s, sizeof(*s));

    d->alias = g_strdup(s->alias);
    return d;
}

BerthDomainDef *
berth_domain_def_copy(const BerthDomainDef *def)
{
    BerthDomainDef *d;

    g_return_val_if_fail(def != NULL, NULL);
    d = g_memdup2(def, sizeof(*def));
    d->struct_size = sizeof(*d);
    d->type = g_strdup(def->type);
    d->name = g_strdup(def->name);
    d->uuid = g_strdup(def->uuid);
    d->title = g_strdup(def->title);
    d->description = g_strdup(def->description);
    d->mem_source = g_strdup(def->mem_source);
    d->cpu_mode = g_strdup(def->cpu_mode);
    d->cpu_model = g_strdup(def->cpu_model);
    d->os_type = g_strdup(def->os_type);
    d->arch = g_strdup(def->arch);
    d->machine = g_strdup(def->machine);
    d->kernel = g_strdup(def->kernel);
    d->initrd = g_strdup(def->initrd);
    d->cmdline = g_strdup(def->cmdline);
    d->boot_devs = g_strdupv(def->boot_devs);
    d->on_poweroff = g_strdup(def->on_poweroff);
    d->on_reboot = g_strdup(def->on_reboot);
    d->on_crash = g_strdup(def->on_crash);
    d->emulator = g_strdup(def->emulator);
    d->disks = (BerthDiskDef **) copy_devices((gpointer *) def->disks, def->n_disks, disk_copy);
    d->nets = (BerthNetDef **) copy_devices((gpointer *) def->nets, def->n_nets, net_copy);
    d->serials = (BerthSerialDef **) copy_devices((gpointer *) def->serials, def->n_serials,
                                                  serial_copy);
    d->filesystems = (BerthFsDef **) copy_devices((gpointer *) def->filesystems,
                                                  def->n_filesystems, fs_copy);
    d->hostdevs = (BerthHostdevDef **) copy_devices((gpointer *) def->hostdevs, def->n_hostdevs,
                                                    hostdev_copy);
    return d;
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing: shared pieces */

/* Requires attribute @name of @node to be one of @list when present; sets *out (or dflt). */
static gboolean
get_enum_attr(xmlNode *node, const char *name, const char *const *list, const char *dflt,
              char **out, GError **error)
{
    g_autofree char *value = get_attr(node, name);

    if (!value) {
        *out = g_strdup(dflt);
        return TRUE;
    }
    if (!in_list(value, list)) {
        g_autofree char *q = quote(value);
        g_autofree char *allowed = g_strjoinv("', '", (char **) list);

        return fail(error, node, name, "unsupported value %s (expected '%s')", q, allowed);
    }
    *out = g_steal_pointer(&value);
    return TRUE;
}

/* yes/no or on/off attribute. */
static gboolean
get_bool_attr(xmlNode *node, const char *name, const char *yes, const char *no, gboolean dflt,
              gboolean *out, GError **error)
{
    g_autofree char *value = get_attr(node, name);

    if (!value) {
        *out = dflt;
    } else if (strcmp(value, yes) == 0) {
        *out = TRUE;
    } else if (strcmp(value, no) == 0) {
        *out = FALSE;
    } else {
        g_autofree char *q = quote(value);

        return fail(error, node, name, "%s is neither '%s' nor '%s'", q, yes, no);
    }
    return TRUE;
}

static gboolean
get_path_attr(xmlNode *node, const char *name, gsize max, char **out, GError **error)
{
    g_autofree char *value = get_attr(node, name);

    if (value && !path_valid(value, max)) {
        g_autofree char *q = quote(value);

        return fail(error, node, name, "path %s is not absolute or longer than %zu bytes", q,
                    max);
    }
    *out = g_steal_pointer(&value);
    return TRUE;
}

/* Checks that @node carries a fixed attribute value (e.g. <driver name='qemu'>). */
static gboolean
check_fixed_attr(xmlNode *node, const char *name, const char *expected, gboolean required,
                 GError **error)
{
    g_autofree char *value = get_attr(node, name);

    if (!value) {
        return required ? fail(error, node, NULL, "the attribute %s='%s' is required", name,
                               expected)
                        : TRUE;
    }
    if (strcmp(value, expected) != 0) {
        g_autofree char *q = quote(value);

        return fail(error, node, name, "unsupported value %s (only '%s')", q, expected);
    }
    return TRUE;
}

static gboolean
parse_pci_attrs(xmlNode *node, BerthPciAddress *addr, GError **error)
{
    static const char *const names[] = {"domain", "bus", "slot", "function"};
    static const guint maxes[] = {0xffff, 0xff, 0x1f, 7};
    guint *fields[] = {&addr->domain, &addr->bus, &addr->slot, &addr->function};

    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autofree char *value = get_attr(node, names[i]);

        *fields[i] = 0;
        if (value && !parse_pci_number(value, maxes[i], fields[i])) {
            g_autofree char *q = quote(value);

            return fail(error, node, names[i], "%s is not a number from 0 to 0x%x", q,
                        maxes[i]);
        }
    }
    addr->set = TRUE;
    return TRUE;
}

/* <address type='pci' domain= bus= slot= function=/> as a device's guest address. */
static gboolean
parse_guest_address(xmlNode *dev, BerthPciAddress *addr, GError **error)
{
    xmlNode *node;

    if (!get_child(dev, "address", &node, error)) {
        return FALSE;
    }
    if (!node) {
        return TRUE;
    }
    {
        g_autofree char *type = get_attr(node, "type");

        if (!type) {
            return fail(error, node, NULL, "the attribute type='pci' is required");
        }
        if (strcmp(type, "pci") != 0) {
            /* libvirt's drive, ccw, usb ... addresses: unsupported, so dropped on request. */
            node->_private = GINT_TO_POINTER(SEEN_NONE);
            return TRUE;
        }
    }
    return parse_pci_attrs(node, addr, error);
}

/* <alias name='ua-NAME'/>: user aliases carry libvirt's 'ua-' prefix. */
static gboolean
parse_alias(xmlNode *dev, char **out, GError **error)
{
    xmlNode *node;
    g_autofree char *name = NULL;
    g_autofree char *q = NULL;

    if (!get_child(dev, "alias", &node, error)) {
        return FALSE;
    }
    if (!node) {
        return TRUE;
    }
    name = get_attr(node, "name");
    if (!name) {
        return fail(error, node, NULL, "the attribute name= is required");
    }
    if (!g_str_has_prefix(name, "ua-")) {
        /* A name assigned at run time (virtio-disk0): not a user alias. libvirt drops it on
         * define; berth calls it unsupported, so it is dropped only on request. A live
         * definition (BERTH_XML_PARSE_LIVE) keeps it: berth_domain_def_parse strips it
         * otherwise. */
        node->_private = GINT_TO_POINTER(SEEN_NONE);
        if (strlen(name) <= 64 && *name && chars_valid(name, "_-")) {
            *out = g_steal_pointer(&name);
        }
        return TRUE;
    }
    q = quote(name);
    if (strlen(name) < 4 || strlen(name) > 64 || !chars_valid(name, "_-")) {
        return fail(error, node, "name",
                    "alias %s must have at most 64 characters, letters, digits, '_' and '-' "
                    "after 'ua-'", q);
    }
    *out = g_steal_pointer(&name);
    return TRUE;
}

static gboolean
parse_readonly(xmlNode *dev, gboolean *out, GError **error)
{
    xmlNode *node;

    if (!get_child(dev, "readonly", &node, error)) {
        return FALSE;
    }
    *out = node != NULL;
    return TRUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing: the domain's scalar parts */

typedef struct {
    const char *name;
    guint64 factor;
} MemUnit;

static const MemUnit mem_units[] = {
    {"b", 1},
    {"bytes", 1},
    {"KB", 1000},
    {"k", 1024},
    {"KiB", 1024},
    {"MB", 1000 * 1000},
    {"M", 1024 * 1024},
    {"MiB", 1024 * 1024},
    {"GB", 1000 * 1000 * 1000},
    {"G", 1024 * 1024 * 1024},
    {"GiB", 1024 * 1024 * 1024},
    {"TB", G_GUINT64_CONSTANT(1000000000000)},
    {"T", G_GUINT64_CONSTANT(1) << 40},
    {"TiB", G_GUINT64_CONSTANT(1) << 40},
};

/* <memory unit='...'>N</memory> in KiB, rounded up to whole KiB as libvirt does. */
static gboolean
parse_memory(xmlNode *node, guint64 *kib, GError **error)
{
    g_autofree char *unit = get_attr(node, "unit");
    g_autofree char *text = node_text(node);
    guint64 factor = 0, value, bytes;

    if (!unit) {
        factor = 1024;
    }
    for (guint i = 0; unit && i < G_N_ELEMENTS(mem_units); i++) {
        if (strcmp(unit, mem_units[i].name) == 0) {
            factor = mem_units[i].factor;
        }
    }
    if (factor == 0) {
        g_autofree char *q = quote(unit);

        return fail(error, node, "unit", "unknown unit %s", q);
    }
    if (!parse_decimal(text, G_MAXUINT64, &value)) {
        g_autofree char *q = quote(text);

        return fail(error, node, NULL, "%s is not a whole number", q);
    }
    if (value > G_MAXUINT64 / factor) {
        g_autofree char *q = quote(text);

        return fail(error, node, unit ? "unit" : NULL, "%s %s overflows a 64-bit byte count",
                    q, unit ? unit : "KiB");
    }
    bytes = value * factor;
    *kib = bytes / 1024 + (bytes % 1024 ? 1 : 0);
    if (*kib == 0) {
        return fail(error, node, NULL, "the memory size must be greater than 0");
    }
    if (*kib > BERTH_DOMAIN_MAX_MEMORY_KIB) {
        return fail(error, node, NULL, "%" G_GUINT64_FORMAT " KiB is more than the limit of %"
                    G_GUINT64_FORMAT " KiB", *kib, BERTH_DOMAIN_MAX_MEMORY_KIB);
    }
    return TRUE;
}

/* Accepts 8-4-4-4-12 or 32 hex digits; stores the lowercase 36-character form. */
static gboolean
parse_uuid(xmlNode *node, const char *text, char **out, GError **error)
{
    g_autofree char *s = g_strstrip(g_strdup(text));
    GString *canon = g_string_new(NULL);
    guint digits = 0;

    for (const char *p = s; *p; p++) {
        if (*p == '-' && (strlen(s) == 36)) {
            continue;
        }
        if (!g_ascii_isxdigit(*p) || digits == 32) {
            digits = 33;
            break;
        }
        if (digits == 8 || digits == 12 || digits == 16 || digits == 20) {
            g_string_append_c(canon, '-');
        }
        g_string_append_c(canon, g_ascii_tolower(*p));
        digits++;
    }
    if (digits != 32 || (strlen(s) == 36 && (s[8] != '-' || s[13] != '-' || s[18] != '-' ||
                                              s[23] != '-'))) {
        g_autofree char *q = quote(text);

        g_string_free(canon, TRUE);
        return fail(error, node, NULL, "%s is not a UUID (32 hex digits, as 8-4-4-4-12)", q);
    }
    *out = g_string_free(canon, FALSE);
    return TRUE;
}

static gboolean
parse_text_enum(xmlNode *parent, const char *name, const char *const *list, const char *dflt,
                char **out, GError **error)
{
    xmlNode *node;
    g_autofree char *text = NULL;

    if (!get_child_text(parent, name, &node, &text, error)) {
        return FALSE;
    }
    if (!node) {
        *out = g_strdup(dflt);
        return TRUE;
    }
    g_strstrip(text);
    if (!in_list(text, list)) {
        g_autofree char *q = quote(text);
        g_autofree char *allowed = g_strjoinv("', '", (char **) list);

        return fail(error, node, NULL, "unsupported value %s (expected '%s')", q, allowed);
    }
    *out = g_steal_pointer(&text);
    return TRUE;
}

static gboolean
parse_identity(xmlNode *root, BerthDomainDef *def, GError **error)
{
    static const char *const types[] = {"kvm", "qemu", NULL};
    xmlNode *node;
    g_autofree char *text = NULL;
    g_autoptr(GError) local = NULL;

    if (!get_enum_attr(root, "type", types, NULL, &def->type, error)) {
        return FALSE;
    }
    if (!def->type) {
        return fail(error, root, NULL, "the attribute type= ('kvm' or 'qemu') is required");
    }
    if (!get_child_text(root, "name", &node, &def->name, error)) {
        return FALSE;
    }
    if (!node) {
        return fail(error, root, NULL, "the element <name> is required");
    }
    if (!berth_domain_name_valid(def->name, &local)) {
        return fail(error, node, NULL, "%s", local->message);
    }
    if (!get_child_text(root, "uuid", &node, &text, error)) {
        return FALSE;
    }
    if (node) {
        if (!parse_uuid(node, text, &def->uuid, error)) {
            return FALSE;
        }
    } else {
        def->uuid = g_uuid_string_random();
    }
    if (!get_child_text(root, "title", &node, &def->title, error)) {
        return FALSE;
    }
    if (def->title && (strchr(def->title, '\n') || strchr(def->title, '\r') ||
                       strlen(def->title) > MAX_TEXT_LEN)) {
        return fail(error, node, NULL, "a title is one line of at most %d bytes", MAX_TEXT_LEN);
    }
    if (def->title && *def->title == '\0') {
        g_clear_pointer(&def->title, g_free);
    }
    if (!get_child_text(root, "description", &node, &def->description, error)) {
        return FALSE;
    }
    if (def->description && *def->description == '\0') {
        g_clear_pointer(&def->description, g_free);
    }
    /* Applications keep their own data here; berth neither reads nor keeps it. */
    if (!get_child(root, "metadata", &node, error)) {
        return FALSE;
    }
    if (node) {
        mark(node, SEEN_SUBTREE);
    }
    return TRUE;
}

static gboolean
parse_resources(xmlNode *root, BerthDomainDef *def, GError **error)
{
    static const char *const sources[] = {"memfd", "file", "anonymous", NULL};
    static const char *const modes[] = {"shared", "private", NULL};
    xmlNode *node, *child;
    g_autofree char *text = NULL;
    guint64 v;

    if (!get_child(root, "memory", &node, error)) {
        return FALSE;
    }
    if (!node) {
        return fail(error, root, NULL, "the element <memory> is required");
    }
    if (!parse_memory(node, &def->memory_kib, error)) {
        return FALSE;
    }
    if (!get_child(root, "currentMemory", &node, error)) {
        return FALSE;
    }
    def->cur_memory_kib = def->memory_kib;
    if (node) {
        if (!parse_memory(node, &def->cur_memory_kib, error)) {
            return FALSE;
        }
        if (def->cur_memory_kib > def->memory_kib) {
            return fail(error, node, NULL, "%" G_GUINT64_FORMAT " KiB is more than <memory> (%"
                        G_GUINT64_FORMAT " KiB)", def->cur_memory_kib, def->memory_kib);
        }
    }

    if (!get_child_text(root, "vcpu", &node, &text, error)) {
        return FALSE;
    }
    if (!node) {
        return fail(error, root, NULL, "the element <vcpu> is required");
    }
    if (!check_fixed_attr(node, "placement", "static", FALSE, error)) {
        return FALSE;
    }
    if (!parse_decimal(text, BERTH_DOMAIN_MAX_VCPUS, &v) || v == 0) {
        g_autofree char *q = quote(text);

        return fail(error, node, NULL, "%s is not a number from 1 to %d", q,
                    BERTH_DOMAIN_MAX_VCPUS);
    }
    def->vcpus = (guint) v;

    if (!get_child(root, "memoryBacking", &node, error)) {
        return FALSE;
    }
    if (node) {
        g_autofree char *mode = NULL;

        if (!get_child(node, "source", &child, error)) {
            return FALSE;
        }
        if (child && !get_enum_attr(child, "type", sources, NULL, &def->mem_source, error)) {
            return FALSE;
        }
        if (child && !def->mem_source) {
            return fail(error, child, NULL, "the attribute type= is required");
        }
        if (!get_child(node, "access", &child, error)) {
            return FALSE;
        }
        if (child && !get_enum_attr(child, "mode", modes, "private", &mode, error)) {
            return FALSE;
        }
        def->mem_shared = mode && strcmp(mode, "shared") == 0;
    }
    return TRUE;
}

static gboolean
parse_cpu(xmlNode *root, BerthDomainDef *def, GError **error)
{
    static const char *const modes[] = {"host-passthrough", "host-model", "custom", NULL};
    xmlNode *node, *model;

    if (!get_child(root, "cpu", &node, error)) {
        return FALSE;
    }
    if (!node) {
        return TRUE;
    }
    if (!get_enum_attr(node, "mode", modes, NULL, &def->cpu_mode, error)) {
        return FALSE;
    }
    if (!get_child_text(node, "model", &model, &def->cpu_model, error)) {
        return FALSE;
    }
    if (model) {
        g_strstrip(def->cpu_model);
        if (!def->cpu_mode) {
            def->cpu_mode = g_strdup("custom");
        }
        if (strcmp(def->cpu_mode, "custom") != 0) {
            return fail(error, model, NULL, "a CPU model goes only with mode='custom'");
        }
        if (*def->cpu_model == '\0' || strlen(def->cpu_model) > 64 ||
            !chars_valid(def->cpu_model, "_.-")) {
            g_autofree char *q = quote(def->cpu_model);

            return fail(error, model, NULL, "%s is not a CPU model name", q);
        }
    } else if (def->cpu_mode && strcmp(def->cpu_mode, "custom") == 0) {
        return fail(error, node, "mode", "mode='custom' needs a <model>");
    }
    return TRUE;
}

static gboolean
parse_os(xmlNode *root, BerthDomainDef *def, GError **error)
{
    xmlNode *os, *node;
    g_autoptr(GPtrArray) boots = g_ptr_array_new_with_free_func(g_free);
    const char *const path_elems[] = {"kernel", "initrd"};
    char **paths[] = {&def->kernel, &def->initrd};

    if (!get_child(root, "os", &os, error)) {
        return FALSE;
    }
    if (!os) {
        def->os_type = g_strdup("hvm");
        def->arch = g_strdup("x86_64");
        def->machine = g_strdup("q35");
        return TRUE;
    }
    if (!get_child_text(os, "type", &node, &def->os_type, error)) {
        return FALSE;
    }
    if (!node) {
        return fail(error, os, NULL, "the element <type>hvm</type> is required");
    }
    g_strstrip(def->os_type);
    if (strcmp(def->os_type, "hvm") != 0) {
        g_autofree char *q = quote(def->os_type);

        return fail(error, node, NULL, "unsupported OS type %s (only 'hvm')", q);
    }
    if (!get_enum_attr(node, "arch", arch_values, "x86_64", &def->arch, error)) {
        return FALSE;
    }
    def->machine = get_attr(node, "machine");
    if (!def->machine) {
        def->machine = g_strdup("q35");
    } else if (*def->machine == '\0' || strlen(def->machine) > 64 ||
               !chars_valid(def->machine, "_.-")) {
        g_autofree char *q = quote(def->machine);

        return fail(error, node, "machine", "%s is not a machine type name", q);
    }

    for (guint i = 0; i < G_N_ELEMENTS(path_elems); i++) {
        if (!get_child_text(os, path_elems[i], &node, paths[i], error)) {
            return FALSE;
        }
        if (node) {
            g_strstrip(*paths[i]);
        }
        if (node && !path_valid(*paths[i], MAX_PATH_LEN)) {
            g_autofree char *q = quote(*paths[i]);

            return fail(error, node, NULL, "path %s is not absolute or too long", q);
        }
    }
    if (!get_child_text(os, "cmdline", &node, &def->cmdline, error)) {
        return FALSE;
    }
    if (node && strlen(def->cmdline) > MAX_TEXT_LEN) {
        return fail(error, node, NULL, "the command line is longer than %d bytes",
                    MAX_TEXT_LEN);
    }
    if (!def->kernel && (def->initrd || def->cmdline)) {
        return fail(error, os, NULL, "<initrd> and <cmdline> need a <kernel>");
    }

    for (xmlNode *c = os->children; c; c = c->next) {
        g_autofree char *dev = NULL;

        if (!is_element(c, "boot")) {
            continue;
        }
        mark(c, SEEN_CONTAINER);
        if (!get_enum_attr(c, "dev", boot_values, NULL, &dev, error)) {
            return FALSE;
        }
        if (!dev) {
            return fail(error, c, NULL, "the attribute dev= is required");
        }
        if (boots->len == MAX_BOOT_DEVS) {
            return fail(error, c, NULL, "more than %d boot devices", MAX_BOOT_DEVS);
        }
        for (guint i = 0; i < boots->len; i++) {
            if (strcmp(boots->pdata[i], dev) == 0) {
                return fail(error, c, "dev", "the boot device is listed twice");
            }
        }
        g_ptr_array_add(boots, g_steal_pointer(&dev));
    }
    if (boots->len > 0) {
        g_ptr_array_add(boots, NULL);
        def->boot_devs = (char **) g_ptr_array_steal(boots, NULL);
    }
    return TRUE;
}

static gboolean
parse_features_events(xmlNode *root, BerthDomainDef *def, GError **error)
{
    xmlNode *node, *child;

    if (!get_child(root, "features", &node, error)) {
        return FALSE;
    }
    if (node) {
        if (!get_child(node, "acpi", &child, error)) {
            return FALSE;
        }
        def->acpi = child != NULL;
        if (!get_child(node, "apic", &child, error)) {
            return FALSE;
        }
        def->apic = child != NULL;
    }
    return parse_text_enum(root, "on_poweroff", on_event_values, "destroy", &def->on_poweroff,
                           error) &&
           parse_text_enum(root, "on_reboot", on_event_values, "restart", &def->on_reboot,
                           error) &&
           parse_text_enum(root, "on_crash", on_event_values, "destroy", &def->on_crash, error);
}

/* ---------------------------------------------------------------------------------------- */
/* Parsing: devices */

static gboolean
parse_disk(xmlNode *node, BerthDiskDef **out, GError **error)
{
    static const char *const devices[] = {"disk", "cdrom", NULL};
    static const char *const formats[] = {"raw", "qcow2", NULL};
    static const char *const buses[] = {"virtio", "sata", "scsi", NULL};
    g_autoptr(BerthDiskDef) d = g_new0(BerthDiskDef, 1);
    xmlNode *child;
    gsize len;

    if (!check_fixed_attr(node, "type", "file", TRUE, error) ||
        !get_enum_attr(node, "device", devices, "disk", &d->device, error)) {
        return FALSE;
    }
    if (!get_child(node, "driver", &child, error)) {
        return FALSE;
    }
    if (child) {
        if (!check_fixed_attr(child, "name", "qemu", FALSE, error) ||
            !get_enum_attr(child, "type", formats, "raw", &d->driver_type, error) ||
            !get_enum_attr(child, "cache", cache_values, NULL, &d->cache, error)) {
            return FALSE;
        }
    } else {
        d->driver_type = g_strdup("raw");
    }
    if (!get_child(node, "source", &child, error)) {
        return FALSE;
    }
    if (child && !get_path_attr(child, "file", MAX_PATH_LEN, &d->source_file, error)) {
        return FALSE;
    }
    if (!d->source_file && strcmp(d->device, "disk") == 0) {
        return fail(error, node, NULL, "a disk needs <source file='/absolute/path'/>");
    }

    if (!get_child(node, "target", &child, error)) {
        return FALSE;
    }
    if (!child) {
        return fail(error, node, NULL, "the element <target dev='...'/> is required");
    }
    d->target_dev = get_attr(child, "dev");
    len = d->target_dev ? strlen(d->target_dev) : 0;
    if (len < 3 || len > 5 ||
        !(g_str_has_prefix(d->target_dev, "vd") || g_str_has_prefix(d->target_dev, "sd") ||
          g_str_has_prefix(d->target_dev, "hd")) ||
        strspn(d->target_dev + 2, "abcdefghijklmnopqrstuvwxyz") != len - 2) {
        g_autofree char *q = quote(d->target_dev);

        return fail(error, child, "dev", "%s is not a disk name like 'vda' or 'sdb'", q);
    }
    if (!get_enum_attr(child, "bus", buses, NULL, &d->target_bus, error)) {
        return FALSE;
    }
    if (!d->target_bus) {
        /* As libvirt does, guess the bus from the name; a CD-ROM never sits on virtio. */
        d->target_bus = g_strdup(strcmp(d->device, "cdrom") == 0 ? "sata"
                                 : g_str_has_prefix(d->target_dev, "sd") ? "scsi"
                                 : g_str_has_prefix(d->target_dev, "hd") ? "sata"
                                                                         : "virtio");
    }
    if (strcmp(d->device, "cdrom") == 0 && strcmp(d->target_bus, "virtio") == 0) {
        return fail(error, child, "bus", "a cdrom cannot be on the virtio bus");
    }

    if (!get_child_text(node, "serial", &child, &d->serial, error)) {
        return FALSE;
    }
    if (child && (*d->serial == '\0' || strlen(d->serial) > 36 ||
                  !chars_valid(d->serial, "_.+-"))) {
        g_autofree char *q = quote(d->serial);

        return fail(error, child, NULL, "serial %s must have 1 to 36 letters, digits or '_.+-'",
                    q);
    }
    if (!parse_readonly(node, &d->readonly, error) || !parse_alias(node, &d->alias, error) ||
        !parse_guest_address(node, &d->address, error)) {
        return FALSE;
    }
    if (strcmp(d->device, "cdrom") == 0) {
        d->readonly = TRUE;
    }
    *out = g_steal_pointer(&d);
    return TRUE;
}

static gboolean
ifname_valid(const char *name)
{
    return name && *name && strlen(name) <= 15 && chars_valid(name, "_.-") &&
           strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* 6 hex bytes separated by ':', unicast and not all zero; stored in lowercase. */
static char *
mac_normalize(const char *mac)
{
    guint bytes[6] = {0};
    guint sum = 0;

    if (strlen(mac) != 17) {
        return NULL;
    }
    for (guint i = 0; i < 6; i++) {
        const char *p = mac + i * 3;

        if (!g_ascii_isxdigit(p[0]) || !g_ascii_isxdigit(p[1]) || (i < 5 && p[2] != ':')) {
            return NULL;
        }
        bytes[i] = (guint) (g_ascii_xdigit_value(p[0]) * 16 + g_ascii_xdigit_value(p[1]));
        sum += bytes[i];
    }
    if ((bytes[0] & 1) || sum == 0) {
        return NULL;
    }
    return g_ascii_strdown(mac, -1);
}

static gboolean
parse_interface(xmlNode *node, BerthNetDef **out, GError **error)
{
    static const char *const types[] = {"user", "network", "bridge", "ethernet", NULL};
    g_autoptr(BerthNetDef) n = g_new0(BerthNetDef, 1);
    xmlNode *child;

    if (!get_enum_attr(node, "type", types, NULL, &n->type, error)) {
        return FALSE;
    }
    if (!n->type) {
        return fail(error, node, NULL, "the attribute type= is required");
    }
    if (!get_child(node, "mac", &child, error)) {
        return FALSE;
    }
    if (child) {
        g_autofree char *mac = get_attr(child, "address");

        n->mac = mac ? mac_normalize(mac) : NULL;
        if (!n->mac) {
            g_autofree char *q = quote(mac);

            return fail(error, child, "address",
                        "%s is not a unicast MAC address like '52:54:00:12:34:56'", q);
        }
    }
    if (!get_child(node, "source", &child, error)) {
        return FALSE;
    }
    if (strcmp(n->type, "bridge") == 0 || strcmp(n->type, "network") == 0) {
        const char *attr = n->type;

        if (!child || !(n->source = get_attr(child, attr))) {
            return fail(error, node, NULL, "type '%s' needs <source %s='...'/>", n->type, attr);
        }
        if (strcmp(attr, "bridge") == 0 ? !ifname_valid(n->source)
                                        : (*n->source == '\0' || strlen(n->source) > 64 ||
                                           !chars_valid(n->source, "_.+-"))) {
            g_autofree char *q = quote(n->source);

            return fail(error, child, attr, "%s is not a valid %s name", q, attr);
        }
    } else if (child) {
        /* Left unconsumed: reported as unsupported for user and ethernet. */
        child->_private = GINT_TO_POINTER(SEEN_NONE);
    }
    if (!get_child(node, "target", &child, error)) {
        return FALSE;
    }
    if (child && strcmp(n->type, "bridge") != 0 && strcmp(n->type, "ethernet") != 0) {
        /* Only bridge and ethernet taps are named by the user: unsupported elsewhere. */
        child->_private = GINT_TO_POINTER(SEEN_NONE);
    } else if (child) {
        n->target_dev = get_attr(child, "dev");
        if (!ifname_valid(n->target_dev)) {
            g_autofree char *q = quote(n->target_dev);

            return fail(error, child, "dev", "%s is not an interface name (1 to 15 letters, "
                        "digits or '_.-')", q);
        }
    }
    if (!get_child(node, "model", &child, error)) {
        return FALSE;
    }
    if (child) {
        if (!get_enum_attr(child, "type", net_models, NULL, &n->model, error)) {
            return FALSE;
        }
        if (!n->model) {
            return fail(error, child, NULL, "the attribute type= is required");
        }
    } else {
        n->model = g_strdup("virtio");
    }
    if (!parse_alias(node, &n->alias, error) || !parse_guest_address(node, &n->address, error)) {
        return FALSE;
    }
    *out = g_steal_pointer(&n);
    return TRUE;
}

static gboolean
parse_serial(xmlNode *node, gboolean console, BerthSerialDef **out, GError **error)
{
    static const char *const types[] = {"file", "unix", "pty", "null", NULL};
    static const char *const modes[] = {"bind", "connect", NULL};
    g_autoptr(BerthSerialDef) s = g_new0(BerthSerialDef, 1);
    xmlNode *child;
    gboolean has_source;

    s->console = console;
    if (!get_enum_attr(node, "type", types, NULL, &s->type, error)) {
        return FALSE;
    }
    if (!s->type) {
        return fail(error, node, NULL, "the attribute type= is required");
    }
    has_source = strcmp(s->type, "file") == 0 || strcmp(s->type, "unix") == 0;
    if (!get_child(node, "source", &child, error)) {
        return FALSE;
    }
    if (has_source) {
        if (!child) {
            return fail(error, node, NULL, "type '%s' needs <source path='...'/>", s->type);
        }
        if (!get_path_attr(child, "path",
                           strcmp(s->type, "unix") == 0 ? MAX_SUN_PATH : MAX_PATH_LEN,
                           &s->path, error)) {
            return FALSE;
        }
        if (!s->path) {
            return fail(error, child, NULL, "the attribute path= is required");
        }
        if (strcmp(s->type, "unix") == 0 &&
            !get_enum_attr(child, "mode", modes, "bind", &s->mode, error)) {
            return FALSE;
        }
        if (strcmp(s->type, "file") == 0 &&
            !get_bool_attr(child, "append", "on", "off", FALSE, &s->append, error)) {
            return FALSE;
        }
    } else if (child) {
        child->_private = GINT_TO_POINTER(SEEN_NONE);
    }
    if (!get_child(node, "target", &child, error)) {
        return FALSE;
    }
    s->port = G_MAXUINT;
    if (child) {
        g_autofree char *port = get_attr(child, "port");
        guint64 v;

        if (!check_fixed_attr(child, "type", console ? "serial" : "isa-serial", FALSE, error)) {
            return FALSE;
        }
        if (port) {
            if (!parse_decimal(port, 3, &v)) {
                g_autofree char *q = quote(port);

                return fail(error, child, "port", "%s is not a port from 0 to 3", q);
            }
            s->port = (guint) v;
        }
    }
    if (!parse_alias(node, &s->alias, error)) {
        return FALSE;
    }
    *out = g_steal_pointer(&s);
    return TRUE;
}

static gboolean
parse_filesystem(xmlNode *node, BerthFsDef **out, GError **error)
{
    static const char *const caches[] = {"auto", "always", "none", NULL};
    g_autoptr(BerthFsDef) f = g_new0(BerthFsDef, 1);
    xmlNode *child, *binary;

    if (!check_fixed_attr(node, "type", "mount", FALSE, error) ||
        !check_fixed_attr(node, "accessmode", "passthrough", FALSE, error)) {
        return FALSE;
    }
    if (!get_child(node, "driver", &child, error)) {
        return FALSE;
    }
    if (!child) {
        return fail(error, node, NULL, "the element <driver type='virtiofs'/> is required");
    }
    if (!check_fixed_attr(child, "type", "virtiofs", TRUE, error)) {
        return FALSE;
    }
    f->driver_type = g_strdup("virtiofs");
    {
        g_autofree char *queue = get_attr(child, "queue");
        guint64 v = 0;

        if (queue && (!parse_decimal(queue, 1024, &v) || v < 2 || (v & (v - 1)) != 0)) {
            g_autofree char *q = quote(queue);

            return fail(error, child, "queue", "%s is not a power of two from 2 to 1024", q);
        }
        f->queue_size = (guint) v;
    }

    f->cache = g_strdup("auto");
    if (!get_child(node, "binary", &binary, error)) {
        return FALSE;
    }
    if (binary) {
        if (!get_child(binary, "cache", &child, error)) {
            return FALSE;
        }
        if (child) {
            g_clear_pointer(&f->cache, g_free);
            if (!get_enum_attr(child, "mode", caches, "auto", &f->cache, error)) {
                return FALSE;
            }
        }
        if (!get_child(binary, "thread_pool", &child, error)) {
            return FALSE;
        }
        if (child) {
            g_autofree char *size = get_attr(child, "size");
            guint64 v;

            if (!size || !parse_decimal(size, 1024, &v)) {
                g_autofree char *q = quote(size);

                return fail(error, child, "size", "%s is not a number from 0 to 1024", q);
            }
            f->thread_pool_size = (guint) v;
        }
    }

    if (!get_child(node, "source", &child, error)) {
        return FALSE;
    }
    if (!child) {
        return fail(error, node, NULL, "<source dir='...'/> or <source socket='...'/> is "
                    "required");
    }
    if (!get_path_attr(child, "dir", MAX_PATH_LEN, &f->source_dir, error) ||
        !get_path_attr(child, "socket", MAX_SUN_PATH, &f->source_socket, error)) {
        return FALSE;
    }
    if (!f->source_dir == !f->source_socket) {
        return fail(error, child, NULL, "exactly one of dir= and socket= is required");
    }
    if (!get_child(node, "target", &child, error)) {
        return FALSE;
    }
    if (child) {
        f->target_dir = get_attr(child, "dir");
    }
    if (!f->target_dir || *f->target_dir == '\0' || strlen(f->target_dir) > 36 ||
        !chars_valid(f->target_dir, "_.+-")) {
        g_autofree char *q = quote(f->target_dir);

        return fail(error, child ? child : node, child ? "dir" : NULL,
                    "the mount tag <target dir=> %s must have 1 to 36 letters, digits or "
                    "'_.+-'", q);
    }
    if (!parse_readonly(node, &f->readonly, error) || !parse_alias(node, &f->alias, error) ||
        !parse_guest_address(node, &f->address, error)) {
        return FALSE;
    }
    *out = g_steal_pointer(&f);
    return TRUE;
}

static gboolean
parse_hostdev(xmlNode *node, BerthHostdevDef **out, GError **error)
{
    g_autoptr(BerthHostdevDef) h = g_new0(BerthHostdevDef, 1);
    xmlNode *child, *addr;
    gboolean bar_on = TRUE;

    if (!check_fixed_attr(node, "mode", "subsystem", TRUE, error) ||
        !check_fixed_attr(node, "type", "pci", TRUE, error) ||
        !get_bool_attr(node, "managed", "yes", "no", FALSE, &h->managed, error)) {
        return FALSE;
    }
    if (!get_child(node, "driver", &child, error)) {
        return FALSE;
    }
    if (child && !check_fixed_attr(child, "name", "vfio", FALSE, error)) {
        return FALSE;
    }
    if (!get_child(node, "source", &child, error)) {
        return FALSE;
    }
    addr = NULL;
    if (child && !get_child(child, "address", &addr, error)) {
        return FALSE;
    }
    if (!addr) {
        return fail(error, node, NULL, "the element <source><address .../></source> is "
                    "required");
    }
    if (!check_fixed_attr(addr, "type", "pci", FALSE, error) ||
        !parse_pci_attrs(addr, &h->source, error)) {
        return FALSE;
    }
    if (!get_child(node, "rom", &child, error)) {
        return FALSE;
    }
    if (child && !get_bool_attr(child, "bar", "on", "off", TRUE, &bar_on, error)) {
        return FALSE;
    }
    h->rom_bar_off = !bar_on;
    if (!parse_alias(node, &h->alias, error) || !parse_guest_address(node, &h->address, error)) {
        return FALSE;
    }
    *out = g_steal_pointer(&h);
    return TRUE;
}

static gboolean
parse_devices(xmlNode *root, BerthDomainDef *def, GError **error)
{
    xmlNode *devices, *node;

    if (!get_child(root, "devices", &devices, error)) {
        return FALSE;
    }
    if (!devices) {
        return TRUE;
    }
    if (!get_child_text(devices, "emulator", &node, &def->emulator, error)) {
        return FALSE;
    }
    if (node) {
        g_strstrip(def->emulator);
        if (!path_valid(def->emulator, MAX_PATH_LEN)) {
            g_autofree char *q = quote(def->emulator);

            return fail(error, node, NULL, "path %s is not absolute or too long", q);
        }
    }
    for (xmlNode *c = devices->children; c; c = c->next) {
        gpointer dev = NULL;
        gboolean ok;
        gpointer **array = NULL;
        guint *n = NULL;
        const char *name = (const char *) c->name;

        if (!is_element(c, NULL)) {
            continue;
        }
        if (strcmp(name, "disk") == 0) {
            array = (gpointer **) &def->disks;
            n = &def->n_disks;
        } else if (strcmp(name, "interface") == 0) {
            array = (gpointer **) &def->nets;
            n = &def->n_nets;
        } else if (strcmp(name, "serial") == 0 || strcmp(name, "console") == 0) {
            array = (gpointer **) &def->serials;
            n = &def->n_serials;
        } else if (strcmp(name, "filesystem") == 0) {
            array = (gpointer **) &def->filesystems;
            n = &def->n_filesystems;
        } else if (strcmp(name, "hostdev") == 0) {
            array = (gpointer **) &def->hostdevs;
            n = &def->n_hostdevs;
        } else {
            continue; /* emulator (handled above) or unsupported (reported later) */
        }
        mark(c, SEEN_CONTAINER);
        if (*n >= BERTH_DOMAIN_MAX_DEVICES) {
            return fail(error, c, NULL, "more than %d devices of this kind",
                        BERTH_DOMAIN_MAX_DEVICES);
        }
        switch (name[0]) {
        case 'd':
            ok = parse_disk(c, (BerthDiskDef **) &dev, error);
            break;
        case 'i':
            ok = parse_interface(c, (BerthNetDef **) &dev, error);
            break;
        case 's':
        case 'c':
            ok = parse_serial(c, name[0] == 'c', (BerthSerialDef **) &dev, error);
            break;
        case 'f':
            ok = parse_filesystem(c, (BerthFsDef **) &dev, error);
            break;
        default:
            ok = parse_hostdev(c, (BerthHostdevDef **) &dev, error);
            break;
        }
        if (!ok) {
            return FALSE;
        }
        /* Grows one at a time: at most BERTH_DOMAIN_MAX_DEVICES, so this stays cheap. */
        *array = g_renew(gpointer, *array, *n + 1);
        (*array)[(*n)++] = dev;
    }
    return TRUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Cross-device checks */

/* Fails when @key (NULL is skipped) was already seen in @set. */
static gboolean
check_unique(GHashTable *set, const char *what, const char *key, GError **error)
{
    g_autofree char *q = NULL;

    if (!key || g_hash_table_add(set, g_strdup(key))) {
        return TRUE;
    }
    q = quote(key);
    return fail_plain(error, "%s %s is used by more than one device", what, q);
}

static gboolean
check_devices(BerthDomainDef *def, GError **error)
{
    g_autoptr(GHashTable) aliases = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) targets = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) macs = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) tags = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) taps = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) pci = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) hostpci = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GPtrArray) guest = g_ptr_array_new_with_free_func(g_free);
    guint64 ports[2] = {0, 0}; /* bit per port: serials, consoles */

    for (guint i = 0; i < def->n_disks; i++) {
        BerthDiskDef *d = def->disks[i];

        if (!check_unique(aliases, "alias", d->alias, error) ||
            !check_unique(targets, "disk target", d->target_dev, error)) {
            return FALSE;
        }
        g_ptr_array_add(guest, d->address.set ? berth_pci_address_format(&d->address) : NULL);
    }
    for (guint i = 0; i < def->n_nets; i++) {
        BerthNetDef *n = def->nets[i];

        if (!check_unique(aliases, "alias", n->alias, error) ||
            !check_unique(macs, "MAC address", n->mac, error) ||
            !check_unique(taps, "interface target", n->target_dev, error)) {
            return FALSE;
        }
        g_ptr_array_add(guest, n->address.set ? berth_pci_address_format(&n->address) : NULL);
    }
    /* Ports given explicitly first, then the rest get the lowest free one, as libvirt does. */
    for (guint i = 0; i < def->n_serials; i++) {
        BerthSerialDef *s = def->serials[i];
        guint64 *used = &ports[s->console ? 1 : 0];

        if (!check_unique(aliases, "alias", s->alias, error)) {
            return FALSE;
        }
        if (s->port != G_MAXUINT) {
            if (*used & (G_GUINT64_CONSTANT(1) << s->port)) {
                return fail_plain(error, "%s port %u is used by more than one device",
                                  s->console ? "console" : "serial", s->port);
            }
            *used |= G_GUINT64_CONSTANT(1) << s->port;
        }
    }
    for (guint i = 0; i < def->n_serials; i++) {
        BerthSerialDef *s = def->serials[i];
        guint64 *used = &ports[s->console ? 1 : 0];

        if (s->port != G_MAXUINT) {
            continue;
        }
        for (s->port = 0; s->port < 4 && (*used & (G_GUINT64_CONSTANT(1) << s->port));
             s->port++) {
        }
        if (s->port == 4) {
            return fail_plain(error, "more than 4 %s ports", s->console ? "console" : "serial");
        }
        *used |= G_GUINT64_CONSTANT(1) << s->port;
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        BerthFsDef *f = def->filesystems[i];

        if (!check_unique(aliases, "alias", f->alias, error) ||
            !check_unique(tags, "filesystem target", f->target_dir, error)) {
            return FALSE;
        }
        g_ptr_array_add(guest, f->address.set ? berth_pci_address_format(&f->address) : NULL);
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        BerthHostdevDef *h = def->hostdevs[i];
        g_autofree char *src = berth_pci_address_format(&h->source);

        if (!check_unique(aliases, "alias", h->alias, error) ||
            !check_unique(hostpci, "host PCI device", src, error)) {
            return FALSE;
        }
        g_ptr_array_add(guest, h->address.set ? berth_pci_address_format(&h->address) : NULL);
    }
    for (guint i = 0; i < guest->len; i++) {
        if (!check_unique(pci, "guest PCI address", guest->pdata[i], error)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Unsupported elements and attributes */

/* The unsupported nodes found so far: all are counted, the first MAX_REPORTED named. Naming
 * one costs a walk over its siblings, so a document with 200,000 of them stays linear. */
typedef struct {
    GPtrArray *paths;
    guint count;
} Unsupported;

static void
report(Unsupported *u, const xmlNode *node, const char *suffix)
{
    GString *s;

    if (u->count++ >= MAX_REPORTED) {
        return;
    }
    s = g_string_new(NULL);
    append_path(s, node);
    g_string_append(s, suffix);
    g_ptr_array_add(u->paths, g_string_free(s, FALSE));
}

static void
collect_unsupported(xmlNode *node, Unsupported *u)
{
    gboolean text_reported = FALSE;

    for (xmlAttr *a = node->properties; a; a = a->next) {
        if (!a->_private) {
            g_autoptr(GString) suffix = g_string_new("/@");

            append_qname(suffix, a->ns, a->name);
            report(u, node, suffix->str);
        }
    }
    for (xmlNode *c = node->children; c; c = c->next) {
        switch (c->type) {
        case XML_ELEMENT_NODE:
            if (!c->_private) {
                report(u, c, "");
            } else if (GPOINTER_TO_INT(c->_private) != SEEN_SUBTREE) {
                collect_unsupported(c, u);
            }
            break;
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE:
            if (GPOINTER_TO_INT(node->_private) != SEEN_TEXT && !text_reported &&
                !is_blank((const char *) c->content)) {
                report(u, node, "/text()");
                text_reported = TRUE;
            }
            break;
        case XML_COMMENT_NODE:
        case XML_PI_NODE:
            break;
        default:
            report(u, node, "/node()");
            break;
        }
    }
}

static gboolean
check_unsupported(xmlNode *root, GError **error)
{
    g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GString) list = g_string_new(NULL);
    Unsupported u = {paths, 0};

    collect_unsupported(root, &u);
    if (u.count == 0) {
        return TRUE;
    }
    for (guint i = 0; i < paths->len; i++) {
        g_string_append_printf(list, "%s%s", i ? ", " : "", (const char *) paths->pdata[i]);
    }
    if (u.count > paths->len) {
        g_string_append_printf(list, " and %u more", u.count - paths->len);
    }
    return fail_plain(error, "unsupported %s: %s",
                      u.count == 1 ? "element or attribute" : "elements or attributes",
                      list->str);
}

/* ---------------------------------------------------------------------------------------- */
/* libxml2 with every loading feature off */

typedef struct {
    char *first_error; /* libxml2's first message, with its line */
    gboolean doctype;  /* a <!DOCTYPE> was met; parsing stopped there */
} ParseState;

static void
on_structured_error(void *user_data, xmlErrorPtr err)
{
    xmlParserCtxt *ctxt = user_data;
    ParseState *state = ctxt ? ctxt->_private : NULL;

    if (!state || state->first_error || !err || err->level < XML_ERR_ERROR) {
        return;
    }
    state->first_error = g_strdup_printf("line %d: %s", err->line,
                                         err->message ? err->message : "error");
    g_strchomp(state->first_error);
}

/* Errors outside a parser context (thread-local handlers): dropped, never printed. */
static void
on_thread_error(void *user_data, xmlErrorPtr err)
{
}

G_GNUC_PRINTF(2, 3)
static void
on_generic_error(void *user_data, const char *fmt, ...)
{
}

/* Any DTD can declare entities (billion laughs) or name external files: refuse it at once. */
static void
on_internal_subset(void *user_data, const xmlChar *name, const xmlChar *external_id,
                   const xmlChar *system_id)
{
    xmlParserCtxt *ctxt = user_data;
    ParseState *state = ctxt->_private;

    state->doctype = TRUE;
    xmlStopParser(ctxt);
}

static void
on_entity_decl(void *user_data, const xmlChar *name, int type, const xmlChar *public_id,
               const xmlChar *system_id, xmlChar *content)
{
    on_internal_subset(user_data, name, public_id, system_id);
}

static xmlParserInput *
on_resolve_entity(void *user_data, const xmlChar *public_id, const xmlChar *system_id)
{
    on_internal_subset(user_data, NULL, public_id, system_id);
    return NULL;
}

/* Skips from @p to just past @end, or to the end of the input. */
static const char *
skip_past(const char *p, const char *limit, const char *end)
{
    const char *hit = memmem(p, (gsize) (limit - p), end, strlen(end));

    return hit ? hit + strlen(end) : limit;
}

/*
 * libxml2 2.9 checks duplicate attributes pairwise: one start tag with 100,000 attributes
 * costs minutes. A linear look at the raw bytes bounds the attributes (and namespace
 * declarations) of every start tag first. It only counts '=' outside quotes; comments,
 * CDATA and processing instructions are skipped, and anything malformed is left for libxml2
 * to refuse.
 */
static gboolean
check_attribute_counts(const char *xml, gsize len, GError **error)
{
    const char *p = xml, *limit = xml + len;

    while ((p = memchr(p, '<', (gsize) (limit - p)))) {
        guint count = 0;
        char quote = 0;

        if ((gsize) (limit - p) >= 4 && memcmp(p, "<!--", 4) == 0) {
            p = skip_past(p + 4, limit, "-->");
            continue;
        }
        if ((gsize) (limit - p) >= 9 && memcmp(p, "<![CDATA[", 9) == 0) {
            p = skip_past(p + 9, limit, "]]>");
            continue;
        }
        if ((gsize) (limit - p) >= 2 && p[1] == '?') {
            p = skip_past(p + 2, limit, "?>");
            continue;
        }
        for (p++; p < limit; p++) {
            if (quote) {
                quote = *p == quote ? 0 : quote;
            } else if (*p == '\'' || *p == '"') {
                quote = *p;
            } else if (*p == '=' && ++count > MAX_ATTRIBUTES) {
                return fail_plain(error, "an element has more than %d attributes",
                                  MAX_ATTRIBUTES);
            } else if (*p == '>' || *p == '<') {
                break;
            }
        }
    }
    return TRUE;
}

static xmlDoc *
read_document(const char *xml, gsize len, GError **error)
{
    static gsize initialized = 0;
    g_autoptr(xmlParserCtxt) ctxt = NULL;
    ParseState state = {0};
    xmlGenericErrorFunc old_generic;
    void *old_generic_ctx;
    xmlStructuredErrorFunc old_structured;
    void *old_structured_ctx;
    xmlDoc *doc;

    if (g_once_init_enter(&initialized)) {
        xmlInitParser();
        g_once_init_leave(&initialized, 1);
    }
    ctxt = xmlNewParserCtxt();
    if (!ctxt) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "domain XML: cannot create a parser context");
        return NULL;
    }
    ctxt->_private = &state;
    ctxt->sax->serror = on_structured_error;
    ctxt->sax->internalSubset = on_internal_subset;
    ctxt->sax->externalSubset = on_internal_subset;
    ctxt->sax->entityDecl = on_entity_decl;
    ctxt->sax->resolveEntity = on_resolve_entity;

    /* libxml2's global handlers are per thread; silence them only around this parse. */
    old_generic = xmlGenericError;
    old_generic_ctx = xmlGenericErrorContext;
    old_structured = xmlStructuredError;
    old_structured_ctx = xmlStructuredErrorContext;
    xmlSetGenericErrorFunc(NULL, on_generic_error);
    xmlSetStructuredErrorFunc(NULL, on_thread_error);

    doc = xmlCtxtReadMemory(ctxt, xml, (int) len, NULL, NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                XML_PARSE_NOCDATA);

    xmlSetGenericErrorFunc(old_generic_ctx, old_generic);
    xmlSetStructuredErrorFunc(old_structured_ctx, old_structured);

    if (state.doctype) {
        g_free(state.first_error);
        xmlFreeDoc(doc);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain XML: document type declarations (<!DOCTYPE>) and entities are "
                    "not allowed");
        return NULL;
    }
    if (!doc || !ctxt->wellFormed || !xmlDocGetRootElement(doc)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain XML: the document is not well-formed XML (%s)",
                    state.first_error ? state.first_error : "no root element");
        g_free(state.first_error);
        xmlFreeDoc(doc);
        return NULL;
    }
    g_free(state.first_error);
    return doc;
}

static void strip_runtime_aliases(BerthDomainDef *def);

/* The size and attribute limits, then libxml2: the one way outside XML is read. */
static xmlDoc *
open_document(const char *xml, gsize len, GError **error)
{
    if (len == 0) {
        fail_plain(error, "the document is empty");
        return NULL;
    }
    if (len > BERTH_DOMAIN_XML_MAX) {
        fail_plain(error, "the document has %zu bytes, more than the limit of %d", len,
                   BERTH_DOMAIN_XML_MAX);
        return NULL;
    }
    if (!check_attribute_counts(xml, len, error)) {
        return NULL;
    }
    return read_document(xml, len, error);
}

BerthDomainDef *
berth_domain_def_parse(const char *xml, gsize len, guint flags, GError **error)
{
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    xmlNode *root;

    g_return_val_if_fail(xml != NULL || len == 0, NULL);
    doc = open_document(xml, len, error);
    if (!doc) {
        return NULL;
    }
    root = xmlDocGetRootElement(doc);
    if (root->ns && root->ns->href && strcmp((const char *) root->name, "domain") == 0) {
        g_autofree char *q = quote((const char *) root->ns->href);

        fail_plain(error, "<domain> is in the namespace %s; it must have none", q);
        return NULL;
    }
    if (!is_element(root, "domain")) {
        g_autoptr(GString) name = g_string_new(NULL);

        append_qname(name, root->ns, root->name);
        fail_plain(error, "the root element is <%s>, not <domain>", name->str);
        return NULL;
    }
    mark(root, SEEN_CONTAINER);

    def = g_new0(BerthDomainDef, 1);
    def->struct_size = sizeof(*def);
    if (!parse_identity(root, def, error) || !parse_resources(root, def, error) ||
        !parse_cpu(root, def, error) || !parse_os(root, def, error) ||
        !parse_features_events(root, def, error) || !parse_devices(root, def, error)) {
        return NULL;
    }
    if (!(flags & BERTH_XML_PARSE_LIVE)) {
        strip_runtime_aliases(def);
    }
    if (!check_devices(def, error)) {
        return NULL;
    }
    if (!(flags & (BERTH_XML_PARSE_IGNORE_UNSUPPORTED | BERTH_XML_PARSE_LIVE)) &&
        !check_unsupported(root, error)) {
        return NULL;
    }
    return g_steal_pointer(&def);
}

/* ---------------------------------------------------------------------------------------- */
/* Devices on their own (hotplug) and runtime aliases */

static const char *const device_elements[BERTH_DEVICE_TYPE_LAST] = {
    [BERTH_DEVICE_DISK] = "disk",
    [BERTH_DEVICE_NET] = "interface",
    [BERTH_DEVICE_FS] = "filesystem",
    [BERTH_DEVICE_HOSTDEV] = "hostdev",
};

/* The device array of @type in @def, and its length. */
static void
device_array(BerthDomainDef *def, BerthDeviceType type, gpointer **array, guint **n)
{
    switch (type) {
    case BERTH_DEVICE_DISK:
        *array = (gpointer *) &def->disks;
        *n = &def->n_disks;
        break;
    case BERTH_DEVICE_NET:
        *array = (gpointer *) &def->nets;
        *n = &def->n_nets;
        break;
    case BERTH_DEVICE_FS:
        *array = (gpointer *) &def->filesystems;
        *n = &def->n_filesystems;
        break;
    default:
        *array = (gpointer *) &def->hostdevs;
        *n = &def->n_hostdevs;
        break;
    }
}

static gpointer
device_ptr(const BerthDeviceDef *dev)
{
    switch (dev->type) {
    case BERTH_DEVICE_DISK:
        return dev->u.disk;
    case BERTH_DEVICE_NET:
        return dev->u.net;
    case BERTH_DEVICE_FS:
        return dev->u.fs;
    default:
        return dev->u.hostdev;
    }
}

/* Every device struct starts with its alias (domain.h keeps it that way). */
static char **
alias_slot(gpointer dev)
{
    return (char **) dev;
}

G_STATIC_ASSERT(G_STRUCT_OFFSET(BerthDiskDef, alias) == 0);
G_STATIC_ASSERT(G_STRUCT_OFFSET(BerthNetDef, alias) == 0);
G_STATIC_ASSERT(G_STRUCT_OFFSET(BerthSerialDef, alias) == 0);
G_STATIC_ASSERT(G_STRUCT_OFFSET(BerthFsDef, alias) == 0);
G_STATIC_ASSERT(G_STRUCT_OFFSET(BerthHostdevDef, alias) == 0);

/* Calls @fn on the alias slot of every device of @def. */
static void
foreach_alias(BerthDomainDef *def, void (*fn)(char **alias, gpointer data), gpointer data)
{
    for (guint i = 0; i < def->n_disks; i++) {
        fn(alias_slot(def->disks[i]), data);
    }
    for (guint i = 0; i < def->n_nets; i++) {
        fn(alias_slot(def->nets[i]), data);
    }
    for (guint i = 0; i < def->n_serials; i++) {
        fn(alias_slot(def->serials[i]), data);
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        fn(alias_slot(def->filesystems[i]), data);
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        fn(alias_slot(def->hostdevs[i]), data);
    }
}

static void
strip_one(char **alias, gpointer data)
{
    if (*alias && !g_str_has_prefix(*alias, "ua-")) {
        g_clear_pointer(alias, g_free);
    }
}

static void
strip_runtime_aliases(BerthDomainDef *def)
{
    foreach_alias(def, strip_one, NULL);
}

static void
collect_alias(char **alias, gpointer data)
{
    if (*alias) {
        g_hash_table_add(data, g_strdup(*alias));
    }
}

/* The disk's index from its target name: vda -> 0, vdz -> 25, vdaa -> 26 (as libvirt). */
static guint
disk_index(const char *target)
{
    guint idx = 0;
    const char *p = target && strlen(target) > 2 ? target + 2 : "";

    for (; *p && g_ascii_islower(*p); p++) {
        idx = MIN(idx * 26 + (guint) (*p - 'a' + 1), 100000);
    }
    return idx ? idx - 1 : 0;
}

/* The runtime alias for one device of @type: PREFIX + the first free number from @start. */
static char *
next_alias(GHashTable *used, const char *prefix, guint start)
{
    for (guint i = start;; i++) {
        char *a = g_strdup_printf("%s%u", prefix, i);

        if (!g_hash_table_contains(used, a)) {
            g_hash_table_add(used, g_strdup(a));
            return a;
        }
        g_free(a);
    }
}

static char *
disk_alias(GHashTable *used, const BerthDiskDef *d)
{
    const char *bus = d->target_bus ? d->target_bus : "virtio";

    if (strcmp(bus, "sata") == 0) {
        return next_alias(used, "sata0-0-", disk_index(d->target_dev));
    }
    if (strcmp(bus, "scsi") == 0) {
        return next_alias(used, "scsi0-0-0-", disk_index(d->target_dev));
    }
    return next_alias(used, "virtio-disk", disk_index(d->target_dev));
}

static char *
device_new_alias(GHashTable *used, BerthDeviceType type, gconstpointer dev)
{
    switch (type) {
    case BERTH_DEVICE_DISK:
        return disk_alias(used, dev);
    case BERTH_DEVICE_NET:
        return next_alias(used, "net", 0);
    case BERTH_DEVICE_FS:
        return next_alias(used, "fs", 0);
    default:
        return next_alias(used, "hostdev", 0);
    }
}

void
berth_domain_def_assign_aliases(BerthDomainDef *def)
{
    g_autoptr(GHashTable) used = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);

    foreach_alias(def, collect_alias, used);
    for (guint i = 0; i < def->n_disks; i++) {
        if (!def->disks[i]->alias) {
            def->disks[i]->alias = disk_alias(used, def->disks[i]);
        }
    }
    for (guint i = 0; i < def->n_nets; i++) {
        if (!def->nets[i]->alias) {
            def->nets[i]->alias = next_alias(used, "net", 0);
        }
    }
    for (guint i = 0; i < def->n_serials; i++) {
        if (!def->serials[i]->alias) {
            def->serials[i]->alias =
                next_alias(used, def->serials[i]->console ? "console" : "serial",
                           def->serials[i]->port == G_MAXUINT ? 0 : def->serials[i]->port);
        }
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        if (!def->filesystems[i]->alias) {
            def->filesystems[i]->alias = next_alias(used, "fs", 0);
        }
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        if (!def->hostdevs[i]->alias) {
            def->hostdevs[i]->alias = next_alias(used, "hostdev", 0);
        }
    }
}

const char *
berth_device_def_alias(const BerthDeviceDef *dev)
{
    return *alias_slot(device_ptr(dev));
}

static void
free_device_struct(BerthDeviceType type, gpointer p)
{
    switch (type) {
    case BERTH_DEVICE_DISK:
        disk_free(p);
        break;
    case BERTH_DEVICE_NET:
        net_free(p);
        break;
    case BERTH_DEVICE_FS:
        fs_free(p);
        break;
    default:
        hostdev_free(p);
        break;
    }
}

void
berth_device_def_free(BerthDeviceDef *dev)
{
    if (!dev) {
        return;
    }
    if (device_ptr(dev)) {
        free_device_struct(dev->type, device_ptr(dev));
    }
    g_free(dev);
}

BerthDeviceDef *
berth_device_def_parse(const char *xml, gsize len, guint flags, GError **error)
{
    g_autoptr(xmlDoc) doc = NULL;
    BerthDeviceDef *dev;
    xmlNode *root;
    gpointer p = NULL;
    gboolean ok;
    int type = -1;

    g_return_val_if_fail(xml != NULL || len == 0, NULL);
    doc = open_document(xml, len, error);
    if (!doc) {
        return NULL;
    }
    root = xmlDocGetRootElement(doc);
    for (int t = 0; t < BERTH_DEVICE_TYPE_LAST; t++) {
        if (is_element(root, device_elements[t])) {
            type = t;
        }
    }
    if (type < 0) {
        g_autoptr(GString) name = g_string_new(NULL);

        append_qname(name, root->ns, root->name);
        fail_plain(error, "the root element is <%s>; a device is one of <disk>, <interface>, "
                   "<filesystem>, <hostdev>", name->str);
        return NULL;
    }
    mark(root, SEEN_CONTAINER);
    switch (type) {
    case BERTH_DEVICE_DISK:
        ok = parse_disk(root, (BerthDiskDef **) &p, error);
        break;
    case BERTH_DEVICE_NET:
        ok = parse_interface(root, (BerthNetDef **) &p, error);
        break;
    case BERTH_DEVICE_FS:
        ok = parse_filesystem(root, (BerthFsDef **) &p, error);
        break;
    default:
        ok = parse_hostdev(root, (BerthHostdevDef **) &p, error);
        break;
    }
    if (!ok) {
        return NULL;
    }
    dev = g_new0(BerthDeviceDef, 1);
    dev->struct_size = sizeof(*dev);
    dev->type = type;
    switch (type) {
    case BERTH_DEVICE_DISK:
        dev->u.disk = p;
        break;
    case BERTH_DEVICE_NET:
        dev->u.net = p;
        break;
    case BERTH_DEVICE_FS:
        dev->u.fs = p;
        break;
    default:
        dev->u.hostdev = p;
        break;
    }
    if (!(flags & BERTH_XML_PARSE_IGNORE_UNSUPPORTED) && !check_unsupported(root, error)) {
        berth_device_def_free(dev);
        return NULL;
    }
    if (*alias_slot(p) && !g_str_has_prefix(*alias_slot(p), "ua-")) {
        g_clear_pointer(alias_slot(p), g_free);
    }
    return dev;
}

void
berth_domain_def_assign_device_alias(const BerthDomainDef *def, BerthDeviceDef *dev)
{
    g_autoptr(GHashTable) used = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gpointer p = device_ptr(dev);

    if (!*alias_slot(p)) {
        foreach_alias((BerthDomainDef *) def, collect_alias, used);
        *alias_slot(p) = device_new_alias(used, dev->type, p);
    }
}

gboolean
berth_domain_def_add_device(BerthDomainDef *def, BerthDeviceDef *dev, GError **error)
{
    gpointer p = device_ptr(dev);
    gpointer *array;
    guint *n;

    device_array(def, dev->type, &array, &n);
    if (*n >= BERTH_DOMAIN_MAX_DEVICES) {
        return fail_plain(error, "the domain already has %d devices of this kind",
                          BERTH_DOMAIN_MAX_DEVICES);
    }
    berth_domain_def_assign_device_alias(def, dev);
    *(gpointer **) array = g_renew(gpointer, *(gpointer **) array, *n + 1);
    (*(gpointer **) array)[(*n)++] = p;
    if (!check_devices(def, error)) {
        (*n)--;
        return FALSE;
    }
    /* The definition owns the device struct now. */
    switch (dev->type) {
    case BERTH_DEVICE_DISK:
        dev->u.disk = NULL;
        break;
    case BERTH_DEVICE_NET:
        dev->u.net = NULL;
        break;
    case BERTH_DEVICE_FS:
        dev->u.fs = NULL;
        break;
    default:
        dev->u.hostdev = NULL;
        break;
    }
    return TRUE;
}

gboolean
berth_domain_def_find_device(const BerthDomainDef *def, const char *alias,
                             BerthDeviceType *type, guint *index)
{
    for (int t = 0; t < BERTH_DEVICE_TYPE_LAST; t++) {
        gpointer *array;
        guint *n;

        device_array((BerthDomainDef *) def, t, &array, &n);
        for (guint i = 0; i < *n; i++) {
            const char *a = *alias_slot((*(gpointer **) array)[i]);
            if (a && strcmp(a, alias) == 0) {
                *type = t;
                *index = i;
                return TRUE;
            }
        }
    }
    return FALSE;
}

gboolean
berth_domain_def_remove_device(BerthDomainDef *def, const char *alias)
{
    BerthDeviceType type;
    guint index;
    gpointer *array;
    guint *n;
    gpointer *items;

    if (!berth_domain_def_find_device(def, alias, &type, &index)) {
        return FALSE;
    }
    device_array(def, type, &array, &n);
    items = *(gpointer **) array;
    free_device_struct(type, items[index]);
    memmove(&items[index], &items[index + 1], (*n - index - 1) * sizeof(gpointer));
    (*n)--;
    return TRUE;
}

/* ---------------------------------------------------------------------------------------- */
/* Formatting */

/* Escapes a text or attribute value; CR always and TAB/LF in attributes become character
 * references, so that line-end and attribute normalization give back the same string. */
static void
append_escaped(GString *out, const char *s, gboolean attr)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            g_string_append(out, "&amp;");
            break;
        case '<':
            g_string_append(out, "&lt;");
            break;
        case '>':
            g_string_append(out, "&gt;");
            break;
        case '\'':
            g_string_append(out, "&apos;");
            break;
        case '"':
            g_string_append(out, "&quot;");
            break;
        case '\t':
        case '\n':
            if (!attr) {
                g_string_append_c(out, *s);
                break;
            }
            G_GNUC_FALLTHROUGH;
        case '\r':
            g_string_append_printf(out, "&#%d;", *s);
            break;
        default:
            g_string_append_c(out, *s);
        }
    }
}

/* Builder state: the output and the current depth. */
typedef struct {
    GString *out;
    int depth;
} Fmt;

static void
fmt_indent(Fmt *f)
{
    for (int i = 0; i < f->depth; i++) {
        g_string_append(f->out, "  ");
    }
}

/* Appends " name='value'" pairs from a NULL-terminated list of (name, value) with NULL values
 * skipped. */
static void
fmt_attrs_v(Fmt *f, va_list ap)
{
    const char *name;

    while ((name = va_arg(ap, const char *))) {
        const char *value = va_arg(ap, const char *);

        if (value) {
            g_string_append_printf(f->out, " %s='", name);
            append_escaped(f->out, value, TRUE);
            g_string_append_c(f->out, '\'');
        }
    }
}

/* <tag attrs...> (open) or <tag attrs.../> (empty). */
G_GNUC_NULL_TERMINATED
static void
fmt_open(Fmt *f, gboolean empty, const char *tag, ...)
{
    va_list ap;

    fmt_indent(f);
    g_string_append_printf(f->out, "<%s", tag);
    va_start(ap, tag);
    fmt_attrs_v(f, ap);
    va_end(ap);
    g_string_append(f->out, empty ? "/>\n" : ">\n");
    if (!empty) {
        f->depth++;
    }
}

static void
fmt_close(Fmt *f, const char *tag)
{
    f->depth--;
    fmt_indent(f);
    g_string_append_printf(f->out, "</%s>\n", tag);
}

/* <tag attrs...>text</tag>, skipped when text is NULL. */
G_GNUC_NULL_TERMINATED
static void
fmt_text(Fmt *f, const char *tag, const char *text, ...)
{
    va_list ap;

    if (!text) {
        return;
    }
    fmt_indent(f);
    g_string_append_printf(f->out, "<%s", tag);
    va_start(ap, text);
    fmt_attrs_v(f, ap);
    va_end(ap);
    g_string_append_c(f->out, '>');
    append_escaped(f->out, text, FALSE);
    g_string_append_printf(f->out, "</%s>\n", tag);
}

static void
fmt_address(Fmt *f, const BerthPciAddress *a)
{
    g_autofree char *domain = NULL, *bus = NULL, *slot = NULL, *function = NULL;

    if (!a->set) {
        return;
    }
    domain = g_strdup_printf("0x%04x", a->domain);
    bus = g_strdup_printf("0x%02x", a->bus);
    slot = g_strdup_printf("0x%02x", a->slot);
    function = g_strdup_printf("0x%x", a->function);
    fmt_open(f, TRUE, "address", "type", "pci", "domain", domain, "bus", bus, "slot", slot,
             "function", function, NULL);
}

static void
fmt_alias(Fmt *f, const char *alias)
{
    if (alias) {
        fmt_open(f, TRUE, "alias", "name", alias, NULL);
    }
}

static void
fmt_disk(Fmt *f, const BerthDiskDef *d)
{
    fmt_open(f, FALSE, "disk", "type", "file", "device", d->device, NULL);
    fmt_open(f, TRUE, "driver", "name", "qemu", "type", d->driver_type, "cache", d->cache, NULL);
    if (d->source_file) {
        fmt_open(f, TRUE, "source", "file", d->source_file, NULL);
    }
    fmt_open(f, TRUE, "target", "dev", d->target_dev, "bus", d->target_bus, NULL);
    fmt_text(f, "serial", d->serial, NULL);
    if (d->readonly) {
        fmt_open(f, TRUE, "readonly", NULL);
    }
    fmt_alias(f, d->alias);
    fmt_address(f, &d->address);
    fmt_close(f, "disk");
}

static void
fmt_net(Fmt *f, const BerthNetDef *n)
{
    fmt_open(f, FALSE, "interface", "type", n->type, NULL);
    if (n->mac) {
        fmt_open(f, TRUE, "mac", "address", n->mac, NULL);
    }
    if (n->source) {
        fmt_open(f, TRUE, "source", n->type, n->source, NULL);
    }
    if (n->target_dev) {
        fmt_open(f, TRUE, "target", "dev", n->target_dev, NULL);
    }
    fmt_open(f, TRUE, "model", "type", n->model, NULL);
    fmt_alias(f, n->alias);
    fmt_address(f, &n->address);
    fmt_close(f, "interface");
}

static void
fmt_serial(Fmt *f, const BerthSerialDef *s)
{
    const char *tag = s->console ? "console" : "serial";
    g_autofree char *port = g_strdup_printf("%u", s->port);

    fmt_open(f, FALSE, tag, "type", s->type, NULL);
    if (s->path) {
        fmt_open(f, TRUE, "source", "mode", s->mode, "path", s->path, "append",
                 strcmp(s->type, "file") == 0 ? (s->append ? "on" : "off") : NULL, NULL);
    }
    fmt_open(f, TRUE, "target", "type", s->console ? "serial" : "isa-serial", "port", port,
             NULL);
    fmt_alias(f, s->alias);
    fmt_close(f, tag);
}

static void
fmt_fs(Fmt *f, const BerthFsDef *fs)
{
    g_autofree char *queue = fs->queue_size ? g_strdup_printf("%u", fs->queue_size) : NULL;
    g_autofree char *pool = fs->thread_pool_size ? g_strdup_printf("%u", fs->thread_pool_size)
                                                 : NULL;

    fmt_open(f, FALSE, "filesystem", "type", "mount", "accessmode", "passthrough", NULL);
    fmt_open(f, TRUE, "driver", "type", fs->driver_type, "queue", queue, NULL);
    fmt_open(f, FALSE, "binary", NULL);
    fmt_open(f, TRUE, "cache", "mode", fs->cache, NULL);
    if (pool) {
        fmt_open(f, TRUE, "thread_pool", "size", pool, NULL);
    }
    fmt_close(f, "binary");
    fmt_open(f, TRUE, "source", "dir", fs->source_dir, "socket", fs->source_socket, NULL);
    fmt_open(f, TRUE, "target", "dir", fs->target_dir, NULL);
    if (fs->readonly) {
        fmt_open(f, TRUE, "readonly", NULL);
    }
    fmt_alias(f, fs->alias);
    fmt_address(f, &fs->address);
    fmt_close(f, "filesystem");
}

static void
fmt_hostdev(Fmt *f, const BerthHostdevDef *h)
{
    BerthPciAddress src = h->source;

    src.set = TRUE;
    fmt_open(f, FALSE, "hostdev", "mode", "subsystem", "type", "pci", "managed",
             h->managed ? "yes" : "no", NULL);
    fmt_open(f, FALSE, "source", NULL);
    {
        g_autofree char *domain = g_strdup_printf("0x%04x", src.domain);
        g_autofree char *bus = g_strdup_printf("0x%02x", src.bus);
        g_autofree char *slot = g_strdup_printf("0x%02x", src.slot);
        g_autofree char *function = g_strdup_printf("0x%x", src.function);

        fmt_open(f, TRUE, "address", "domain", domain, "bus", bus, "slot", slot, "function",
                 function, NULL);
    }
    fmt_close(f, "source");
    if (h->rom_bar_off) {
        fmt_open(f, TRUE, "rom", "bar", "off", NULL);
    }
    fmt_alias(f, h->alias);
    fmt_address(f, &h->address);
    fmt_close(f, "hostdev");
}

char *
berth_domain_def_format(const BerthDomainDef *def)
{
    Fmt f = {g_string_new(NULL), 0};
    g_autofree char *mem = NULL, *cur = NULL, *vcpus = NULL;

    g_return_val_if_fail(def != NULL, NULL);
    mem = g_strdup_printf("%" G_GUINT64_FORMAT, def->memory_kib);
    cur = g_strdup_printf("%" G_GUINT64_FORMAT, def->cur_memory_kib);
    vcpus = g_strdup_printf("%u", def->vcpus);

    fmt_open(&f, FALSE, "domain", "type", def->type, NULL);
    fmt_text(&f, "name", def->name, NULL);
    fmt_text(&f, "uuid", def->uuid, NULL);
    fmt_text(&f, "title", def->title, NULL);
    fmt_text(&f, "description", def->description, NULL);
    fmt_text(&f, "memory", mem, "unit", "KiB", NULL);
    fmt_text(&f, "currentMemory", cur, "unit", "KiB", NULL);
    if (def->mem_source || def->mem_shared) {
        fmt_open(&f, FALSE, "memoryBacking", NULL);
        if (def->mem_source) {
            fmt_open(&f, TRUE, "source", "type", def->mem_source, NULL);
        }
        if (def->mem_shared) {
            fmt_open(&f, TRUE, "access", "mode", "shared", NULL);
        }
        fmt_close(&f, "memoryBacking");
    }
    fmt_text(&f, "vcpu", vcpus, NULL);
    fmt_open(&f, FALSE, "os", NULL);
    fmt_text(&f, "type", def->os_type, "arch", def->arch, "machine", def->machine, NULL);
    fmt_text(&f, "kernel", def->kernel, NULL);
    fmt_text(&f, "initrd", def->initrd, NULL);
    fmt_text(&f, "cmdline", def->cmdline, NULL);
    for (guint i = 0; def->boot_devs && def->boot_devs[i]; i++) {
        fmt_open(&f, TRUE, "boot", "dev", def->boot_devs[i], NULL);
    }
    fmt_close(&f, "os");
    if (def->acpi || def->apic) {
        fmt_open(&f, FALSE, "features", NULL);
        if (def->acpi) {
            fmt_open(&f, TRUE, "acpi", NULL);
        }
        if (def->apic) {
            fmt_open(&f, TRUE, "apic", NULL);
        }
        fmt_close(&f, "features");
    }
    if (def->cpu_model) {
        fmt_open(&f, FALSE, "cpu", "mode", def->cpu_mode, NULL);
        fmt_text(&f, "model", def->cpu_model, NULL);
        fmt_close(&f, "cpu");
    } else if (def->cpu_mode) {
        fmt_open(&f, TRUE, "cpu", "mode", def->cpu_mode, NULL);
    }
    fmt_text(&f, "on_poweroff", def->on_poweroff, NULL);
    fmt_text(&f, "on_reboot", def->on_reboot, NULL);
    fmt_text(&f, "on_crash", def->on_crash, NULL);

    if (!def->emulator && def->n_disks + def->n_nets + def->n_serials + def->n_filesystems +
                              def->n_hostdevs == 0) {
        fmt_open(&f, TRUE, "devices", NULL);
        fmt_close(&f, "domain");
        return g_string_free(f.out, FALSE);
    }
    fmt_open(&f, FALSE, "devices", NULL);
    fmt_text(&f, "emulator", def->emulator, NULL);
    for (guint i = 0; i < def->n_disks; i++) {
        fmt_disk(&f, def->disks[i]);
    }
    for (guint i = 0; i < def->n_nets; i++) {
        fmt_net(&f, def->nets[i]);
    }
    for (guint i = 0; i < def->n_serials; i++) {
        fmt_serial(&f, def->serials[i]);
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        fmt_fs(&f, def->filesystems[i]);
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        fmt_hostdev(&f, def->hostdevs[i]);
    }
    fmt_close(&f, "devices");
    fmt_close(&f, "domain");
    return g_string_free(f.out, FALSE);
}
