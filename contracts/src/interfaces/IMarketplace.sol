// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

/// @title IMarketplace — asset registry and licenses, as other contracts and off-chain code see it
/// @notice Providers publish datasets and models (content hash, price, license terms, payees,
/// upstream parents); each asset's payments go into its RevenueVault (`vaultOf`). Buying pays
/// exactly the price into the vault and records a license. Prices and amounts are in the asset
/// token's base units; shares in basis points (10,000 = 100%).
interface IMarketplace {
    /// @notice What an asset is.
    enum AssetKind {
        Dataset,
        Model
    }

    /// @notice Everything about an asset, for views.
    struct AssetView {
        uint256 assetId;
        AssetKind kind;
        address owner;
        address token;
        uint256 price;
        uint64 licenseDuration;
        uint16 version;
        bool listed;
        bytes32 contentHash;
        string uri;
        address vault;
        uint256[] parents;
    }

    // ---------------------------------------------------------------- errors

    /// @notice No asset has id `assetId`.
    /// @param assetId The id asked for.
    error UnknownAsset(uint256 assetId);
    /// @notice The asset is not for sale right now.
    /// @param assetId The unlisted asset.
    error AssetDelisted(uint256 assetId);
    /// @notice The price is higher than the buyer accepted.
    /// @param assetId The asset.
    /// @param price Its current price.
    /// @param maxPrice The most the buyer accepted.
    error PriceAboveMax(uint256 assetId, uint256 price, uint256 maxPrice);
    /// @notice The signed authorization is for a different amount than the price.
    /// @param assetId The asset.
    /// @param price Its current price.
    /// @param authorized The amount the buyer signed.
    error PriceMismatch(uint256 assetId, uint256 price, uint256 authorized);
    /// @notice Payee and parent shares must add up to 10,000 bps.
    /// @param totalBps What they add up to.
    /// @param expectedBps 10,000.
    error SharesDoNotSum(uint256 totalBps, uint256 expectedBps);
    /// @notice A parent asset does not exist (yet).
    /// @param parentId The unknown parent id.
    error UnknownParent(uint256 parentId);
    /// @notice More parents than MAX_PARENTS.
    /// @param count Parents given.
    /// @param max MAX_PARENTS.
    error TooManyParents(uint256 count, uint256 max);
    /// @notice More payees than MAX_PAYEES.
    /// @param count Payees given.
    /// @param max MAX_PAYEES.
    error TooManyPayees(uint256 count, uint256 max);
    /// @notice An asset needs at least one payee.
    error NoPayees();
    /// @notice Two arrays that go together have different lengths.
    /// @param left Length of the first (payees, or parents).
    /// @param right Length of the second (shares, or parent shares).
    error LengthMismatch(uint256 left, uint256 right);
    /// @notice A payee or parent was given a zero share.
    /// @param index Its position: payees first, then parents.
    error ZeroShare(uint256 index);
    /// @notice Only the asset's owner may do this.
    /// @param assetId The asset.
    /// @param caller Who tried.
    /// @param owner The asset's owner.
    error NotAssetOwner(uint256 assetId, address caller, address owner);
    /// @notice The token must be a contract address.
    /// @param token The address given.
    error InvalidToken(address token);
    /// @notice The price does not fit in 96 bits.
    /// @param price The price given.
    error PriceTooLarge(uint256 price);
    /// @notice The protocol fee is above the cap.
    /// @param feeBps The fee given.
    /// @param maxFeeBps MAX_FEE_BPS.
    error FeeTooHigh(uint256 feeBps, uint256 maxFeeBps);
    /// @notice The account already holds a perpetual license.
    /// @param assetId The asset.
    /// @param account The license holder.
    error AlreadyLicensed(uint256 assetId, address account);

    // ---------------------------------------------------------------- events

    /// @notice A new asset was published, with its vault and lineage; `listed` tells whether it can
    /// be bought yet (ListingChanged follows every later change).
    /// @param assetId The new asset's id.
    /// @param owner Its publisher and owner.
    /// @param kind Dataset or model.
    /// @param contentHash sha256 of the content.
    /// @param uri Where the metadata lives.
    /// @param token The ERC-20 it is paid in.
    /// @param price Price of a license, or of one model call by channel (token base units).
    /// @param licenseDuration Seconds a license lasts (0 = perpetual).
    /// @param vault The asset's RevenueVault.
    /// @param parents Upstream asset ids.
    /// @param listed Whether it can be bought now.
    event AssetPublished(
        uint256 indexed assetId,
        address indexed owner,
        AssetKind kind,
        bytes32 contentHash,
        string uri,
        address token,
        uint256 price,
        uint64 licenseDuration,
        address vault,
        uint256[] parents,
        bool listed
    );
    /// @notice The owner published a new version (new content, same lineage, same vault); a listed
    /// asset is delisted by it (ListingChanged follows) until the owner lists it again.
    /// @param assetId The asset.
    /// @param version The new version number (the first is 1).
    /// @param contentHash sha256 of the new content.
    /// @param uri Where the new metadata lives.
    event AssetVersionPublished(uint256 indexed assetId, uint16 version, bytes32 contentHash, string uri);
    /// @notice The owner changed the price.
    /// @param assetId The asset.
    /// @param price The new price (token base units).
    event PriceUpdated(uint256 indexed assetId, uint256 price);
    /// @notice The owner listed or delisted the asset.
    /// @param assetId The asset.
    /// @param listed Whether it can be bought now.
    event ListingChanged(uint256 indexed assetId, bool listed);
    /// @notice `buyer` paid `price` and holds a license until `expiresAt` (max uint64 = perpetual).
    /// @param assetId The asset.
    /// @param buyer The license holder.
    /// @param price What it paid into the vault (token base units).
    /// @param expiresAt When the license ends (unix seconds).
    event LicensePurchased(uint256 indexed assetId, address indexed buyer, uint256 price, uint64 expiresAt);

    // ---------------------------------------------------------------- external: publishing

    /// @notice Publishes a new asset and creates its vault.
    /// @param kind Dataset or model.
    /// @param contentHash sha256 of the content.
    /// @param uri Where the metadata lives.
    /// @param price Price of a license, or of one model call by channel (token base units, < 2^96).
    /// @param token The ERC-20 it is paid in (a contract).
    /// @param licenseDuration Seconds a license lasts (0 = perpetual).
    /// @param payees Who shares the revenue (at most MAX_PAYEES, at least one).
    /// @param shares Payee shares in bps; with `parentShares` they must add up to 10,000.
    /// @param parents Upstream asset ids; each parent's vault becomes a payee (a royalty).
    /// @param parentShares Each parent's share in bps.
    /// @param listed True to sell it at once; false to publish it unlisted (not buyable) until the
    /// owner's `setListed(assetId, true)`, e.g. once its content is uploaded.
    /// @return assetId The new asset's id.
    function publish(
        AssetKind kind,
        bytes32 contentHash,
        string calldata uri,
        uint256 price,
        address token,
        uint64 licenseDuration,
        address[] calldata payees,
        uint256[] calldata shares,
        uint256[] calldata parents,
        uint256[] calldata parentShares,
        bool listed
    ) external returns (uint256 assetId);

    /// @notice Publishes new content for an asset; licenses, price, payees and lineage stay. The asset
    /// is unlisted from now on (no purchase of a version whose content no server holds yet) until
    /// its owner lists it again with `setListed`, once the new content is uploaded. Owner only.
    /// @param assetId The asset.
    /// @param contentHash sha256 of the new content.
    /// @param uri Where the new metadata lives.
    function publishVersion(uint256 assetId, bytes32 contentHash, string calldata uri) external;

    /// @notice Changes the price of future purchases. Owner only.
    /// @param assetId The asset.
    /// @param price The new price (token base units, < 2^96).
    function setPrice(uint256 assetId, uint256 price) external;

    /// @notice Lists (true) or delists (false) an asset; existing licenses are kept. Owner only.
    /// @param assetId The asset.
    /// @param listed Whether it can be bought from now on.
    function setListed(uint256 assetId, bool listed) external;

    // ---------------------------------------------------------------- external: buying

    /// @notice Buys a license with a prior ERC-20 approval: pays the price into the asset's vault.
    /// @param assetId The asset.
    /// @param maxPrice The most the buyer pays (reverts PriceAboveMax above it).
    function buy(uint256 assetId, uint256 maxPrice) external;

    /// @notice Buys a license using an EIP-2612 permit instead of a prior approval.
    /// @param assetId The asset.
    /// @param maxPrice The most the buyer pays; the permit is for the price itself.
    /// @param deadline The permit's deadline (unix seconds).
    /// @param v The permit signature's v.
    /// @param r The permit signature's r.
    /// @param s The permit signature's s.
    function buyWithPermit(uint256 assetId, uint256 maxPrice, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external;

    /// @notice Buys a license for `buyer` with its EIP-3009 ReceiveWithAuthorization, so anyone
    /// (a relayer) can submit it and pay the gas.
    /// @param assetId The asset.
    /// @param buyer Who signed the authorization and gets the license.
    /// @param value The amount signed: exactly the asset's price.
    /// @param validAfter The authorization's start (unix seconds).
    /// @param validBefore The authorization's end (unix seconds).
    /// @param salt Makes the nonce unique; the buyer signs nonce = authorizationNonce(assetId, salt).
    /// @param signature The buyer's EIP-712 signature (65 bytes, or ERC-1271 for a contract wallet).
    function buyWithAuthorization(
        uint256 assetId,
        address buyer,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 salt,
        bytes calldata signature
    ) external;

    // ---------------------------------------------------------------- views

    /// @notice The EIP-3009 nonce a buyer signs to buy `assetId` through buyWithAuthorization.
    /// @param assetId The asset.
    /// @param salt The buyer's random salt.
    /// @return The nonce (binds the authorization to this marketplace and asset).
    function authorizationNonce(uint256 assetId, bytes32 salt) external view returns (bytes32);

    /// @notice The asset's RevenueVault (its payTo on every payment path). Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return The vault's address.
    function vaultOf(uint256 assetId) external view returns (address);

    /// @notice True while `account` holds an unexpired license to `assetId`.
    /// @param assetId The asset.
    /// @param account The account asked about.
    /// @return Whether its license is live.
    function hasAccess(uint256 assetId, address account) external view returns (bool);

    /// @notice When `account`'s license to `assetId` ends (0 = never bought, PERPETUAL = never ends).
    /// @param assetId The asset.
    /// @param account The account asked about.
    /// @return The expiry (unix seconds).
    function licenseExpiry(uint256 assetId, address account) external view returns (uint64);

    /// @notice What `account` paid into `assetId`'s vault for licenses, all purchases together
    /// (token base units; 0 if it never bought one, or only at price 0).
    /// @param assetId The asset.
    /// @param account The account asked about.
    /// @return The total paid.
    function licensePaid(uint256 assetId, address account) external view returns (uint256);

    /// @notice The asset's owner (who may change it and close its channels early). Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return The owner.
    function ownerOf(uint256 assetId) external view returns (address);

    /// @notice The asset's current price: of a license, or of one call for a model paid by channel
    /// (token base units). Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return The price.
    function priceOf(uint256 assetId) external view returns (uint256);

    /// @notice Token the asset is paid in and the vault payments go to. Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return token The ERC-20.
    /// @return vault The asset's RevenueVault.
    function paymentTerms(uint256 assetId) external view returns (address token, address vault);

    /// @notice Upstream asset ids of `assetId`. Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return The parents' ids.
    function parentsOf(uint256 assetId) external view returns (uint256[] memory);

    /// @notice Everything about an asset. Reverts UnknownAsset.
    /// @param assetId The asset.
    /// @return view_ The asset's fields, content, vault and parents.
    function getAsset(uint256 assetId) external view returns (AssetView memory view_);

    /// @notice Number of assets published; asset ids run from 1 to assetCount.
    /// @return The count.
    function assetCount() external view returns (uint256);

    /// @notice The RevenueVault implementation every asset's vault clones.
    /// @return Its address.
    function vaultImplementation() external view returns (address);

    /// @notice Receives the protocol fee as a payee of every vault.
    /// @return Its address.
    function treasury() external view returns (address);

    /// @notice Protocol fee in basis points of every payment.
    /// @return The fee.
    function feeBps() external view returns (uint256);
}
